// The guest's entry when a V8 code cache of the bundle exists (dist/guest-loader.cjs). Node
// spends ~15 ms of every guest start parsing and compiling the 900 KB bundle; V8 can instead
// take the bytecode a build-time run produced (scripts/guest-cache.ts). The host hands over the
// bundle and its cache as read-only descriptors (argv: their numbers), so this file is still
// the only one the guest may read by path. A cache that does not belong to this bundle, that is
// damaged, or that V8 rejects (another node, other V8 flags) only costs the plain compile.
import { closeSync, fstatSync, readSync } from 'node:fs';
import { Script } from 'node:vm';
import { fingerprint } from '../fingerprint.ts';
import { bundleId } from './bundle-id.ts';

export { bundleId, ID_MARK } from './bundle-id.ts';

/**
 * First line of a cache file: this, the bundle's id and a fingerprint of V8's data, which
 * follows. V8 checks neither the source's text (only its length) nor its data's integrity: a
 * damaged cache crashes node (measured: a fatal "unreachable code" in the deserializer).
 */
export const CACHE_MAGIC = 'instar-v8-code-cache 2 ';
/** What tests can read back: whether this start used the cache. */
export const CACHE_STATE = Symbol.for('instar.guestCodeCache');

/** 'stale': not made for this bundle, or damaged; 'rejected': V8's refusal (flags, version). */
export type CacheState = 'used' | 'rejected' | 'stale' | 'none';

const MAX_FILE = 64 * 1024 * 1024;

export function cacheHeader(id: string, data: Uint8Array): string {
  return `${CACHE_MAGIC}${id} ${fingerprint(data)}\n`;
}

/** V8's bytes in a cache file, if the file was made for the bundle with this id and is whole. */
export function cacheDataFor(file: Buffer, id: string | undefined): Buffer | undefined {
  const end = file.indexOf(0x0a);
  if (id === undefined || end < 0 || end > 300) return undefined;
  const data = file.subarray(end + 1);
  return file.toString('latin1', 0, end + 1) === cacheHeader(id, data) ? data : undefined;
}

/** Compiles the bundle as Node would a CommonJS file, with V8's cached code when given. */
export function compileGuest(source: string, cachedData?: Buffer): Script {
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  return new Script(wrapped, { filename: 'guest.cjs', ...(cachedData ? { cachedData } : {}) });
}

export function runGuest(script: Script): void {
  const module = { exports: {} };
  (script.runInThisContext() as (...a: unknown[]) => void)(module.exports, require, module, 'guest.cjs', '.');
}

function readFd(fd: number): Buffer {
  const size = fstatSync(fd).size;
  if (size > MAX_FILE) throw new Error(`guest file too large (${size} bytes)`);
  const buf = Buffer.allocUnsafe(size);
  let done = 0;
  while (done < size) {
    const n = readSync(fd, buf, done, size - done, done);
    if (n === 0) break;
    done += n;
  }
  closeSync(fd);
  return buf.subarray(0, done);
}

/** Reads the bundle (and the cache, when its fd is given) and compiles it; closes both fds. */
export function loadGuest(bundleFd: number, cacheFd: number | undefined): { script: Script; state: CacheState } {
  const source = readFd(bundleFd).toString('utf8');
  // The loader is only ever handed a stamped bundle: anything else (an empty file, the wrong fd)
  // would otherwise run as an empty script and exit 0 without a word.
  if (bundleId(source) === undefined) throw new Error(`fd ${bundleFd} is not an instar guest bundle (no id line)`);
  if (cacheFd === undefined) return { script: compileGuest(source), state: 'none' };
  const data = cacheDataFor(readFd(cacheFd), bundleId(source));
  if (!data) return { script: compileGuest(source), state: 'stale' };
  const script = compileGuest(source, data);
  return { script, state: script.cachedDataRejected ? 'rejected' : 'used' };
}

// Run as a program, not when the build's cache maker or a test requires it for its functions.
if (typeof require !== 'undefined' && typeof module !== 'undefined' && require.main === module) {
  const [bundleFd, cacheFd] = process.argv.slice(2).map(Number);
  const { script, state } = loadGuest(bundleFd, Number.isInteger(cacheFd) ? cacheFd : undefined);
  (globalThis as Record<symbol, unknown>)[CACHE_STATE] = state;
  runGuest(script);
}
