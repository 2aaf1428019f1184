// libc calls Node does not offer (lseek's SEEK_DATA/SEEK_HOLE, fallocate's hole punching),
// through koffi: an FFI whose npm package carries its prebuilt binaries, so it installs from the
// registry alone, and the only way to reach these calls from Node without a compiler. Trusted
// host only (the guest could not load an addon). koffi is optional and costs ~15 ms to load:
// callers ask only when they need a call, and get null where it cannot load (not installed,
// another platform), and must then do without.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

interface Library {
  func(signature: string): unknown;
}

let libc: Library | null | undefined;

function load(): Library | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (process.platform !== 'linux') return libc;
  try {
    // A require by a computed name: bundlers leave it alone, so koffi stays an optional runtime dependency.
    const name = 'koffi';
    const req = createRequire(import.meta.url);
    libc = (nativeKoffi(req, name) ?? (req(name) as { load(lib: string): Library })).load('libc.so.6');
  } catch {
    libc = null;
  }
  return libc;
}

/**
 * koffi's native addon, required directly: koffi's index.js first loads its build tool, which
 * requires https, tls, crypto and zlib (~7 ms of CPU here) only to name the platform. Undefined
 * where the prebuilt binary for this platform is not where koffi 2 keeps it, or is another version.
 */
function nativeKoffi(req: NodeJS.Require, name: string): { load(lib: string): Library } | undefined {
  if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) return undefined;
  try {
    const dir = dirname(req.resolve(`${name}/package.json`));
    const { version } = req(`${name}/package.json`) as { version: string };
    const native = req(join(dir, 'build', 'koffi', `linux_${process.arch}`, 'koffi.node')) as { version: string; load(lib: string): Library };
    return native.version === version ? native : undefined;
  } catch {
    return undefined;
  }
}

const functions = new Map<string, unknown>();

/** The libc function declared by `signature` (koffi's C-like syntax), or null when unavailable. */
export function libcFunction<F>(signature: string): F | null {
  if (functions.has(signature)) return functions.get(signature) as F | null;
  let fn: unknown = null;
  try {
    fn = load()?.func(signature) ?? null;
  } catch {
    fn = null;
  }
  functions.set(signature, fn);
  return fn as F | null;
}
