// The files node needs to start inside an otherwise empty root: the binary, its ELF
// interpreter and the shared objects it links. Found without spawning anything: the host is
// running the very same binary, so /proc/self/maps lists the libraries it loaded, and the
// interpreter is read from the binary's PT_INTERP header. If that fails, the dynamic loader is
// asked (LD_TRACE_LOADED_OBJECTS, one ~3 ms spawn).
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** [real file, path inside the sandbox] pairs to bind read-only, or why they cannot be found. */
export function nodeFiles(): [string, string][] | string {
  try {
    return fromMaps() ?? fromLoaderTrace();
  } catch (e) {
    return `cannot find the files node needs: ${(e as Error).message}`;
  }
}

/** The ELF interpreter (PT_INTERP) of an executable, if it has one. */
export function elfInterpreter(file: string): string | undefined {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(4096);
    const n = readSync(fd, head, 0, head.length, 0);
    if (n < 64 || head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return undefined; // 64-bit LE ELF only
    const phoff = Number(head.readBigUInt64LE(0x20));
    const phentsize = head.readUInt16LE(0x36);
    const phnum = head.readUInt16LE(0x38);
    for (let i = 0; i < phnum; i++) {
      const at = phoff + i * phentsize;
      if (at + 56 > n) return undefined;
      if (head.readUInt32LE(at) !== 3) continue; // PT_INTERP
      const offset = Number(head.readBigUInt64LE(at + 8));
      const size = Number(head.readBigUInt64LE(at + 32));
      if (size < 2 || size > 4096) return undefined;
      const name = Buffer.alloc(size);
      readSync(fd, name, 0, size, offset);
      return name.toString('latin1').replace(/\0.*$/s, '');
    }
    return undefined;
  } finally {
    closeSync(fd);
  }
}

function fromMaps(): [string, string][] | undefined {
  if (!existsSync('/proc/self/maps')) return undefined;
  const interp = elfInterpreter(process.execPath);
  if (!interp) return undefined;
  const binds: [string, string][] = [[realpathSync(process.execPath), process.execPath], [realpathSync(interp), interp]];
  const libs = new Set<string>();
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const path = line.split(/\s+/).slice(5).join(' ');
    if (path.startsWith('/') && /\.so(\.|$)/.test(basename(path)) && !path.endsWith(' (deleted)')) libs.add(path);
  }
  for (const lib of libs) {
    binds.push([lib, lib]);
    const soname = sonameLink(lib);
    if (soname) binds.push([lib, soname]);
  }
  return binds;
}

/**
 * The name the loader looks for when it differs from the file's own (libstdc++.so.6 for
 * libstdc++.so.6.0.30): the version suffix is shortened until a link to the same file appears.
 */
function sonameLink(lib: string): string | undefined {
  let name = basename(lib);
  while (/\.so(\.\d+){2,}$/.test(name)) {
    name = name.replace(/\.\d+$/, '');
    const candidate = join(dirname(lib), name);
    try {
      if (realpathSync(candidate) === lib) return candidate;
    } catch {
      // not there: shorten again
    }
  }
  return undefined;
}

function fromLoaderTrace(): [string, string][] | string {
  const r = spawnSync(process.execPath, [], { env: { LD_TRACE_LOADED_OBJECTS: '1' }, encoding: 'utf8', timeout: 10_000 });
  if (r.error) return `cannot list node's libraries: ${r.error.message}`;
  const binds: [string, string][] = [[realpathSync(process.execPath), process.execPath]];
  for (const line of r.stdout.split('\n')) {
    if (/=>\s+not found/.test(line)) return `node's library ${line.trim()}`;
    const m = /=>\s+(\/\S+)\s+\(/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) binds.push([realpathSync(m[1]), m[1]]);
  }
  return binds;
}
