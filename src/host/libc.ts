// libc calls Node does not offer (lseek's SEEK_DATA/SEEK_HOLE, fallocate's hole punching),
// through koffi: an FFI whose npm package carries its prebuilt binaries, so it installs from the
// registry alone, and the only way to reach these calls from Node without a compiler. Trusted
// host only (the guest could not load an addon). koffi is optional and costs ~15 ms to load:
// callers ask only when they need a call, and get null where it cannot load (not installed,
// another platform), and must then do without.
import { createRequire } from 'node:module';

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
    const koffi = createRequire(import.meta.url)(name) as { load(lib: string): Library };
    libc = koffi.load('libc.so.6');
  } catch {
    libc = null;
  }
  return libc;
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
