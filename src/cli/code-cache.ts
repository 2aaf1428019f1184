// The CLI's V8 code cache. dist/cli.js is a small loader (boot.ts) that compiles the bundle,
// dist/cli-bundle.js, with the bytecode the build saved in dist/cli-bundle.cache: compiling the
// ~900 KB bundle from scratch is ~8 ms of every command line's start. The cache is written only
// by the build (scripts/build.mjs); at run time it is read, never written.
//
// V8 itself checks only that the cache comes from the same V8 version and flags and from a
// source of the same length, and it trusts the bytes: a corrupt cache crashes node (measured:
// SIGSEGV). So the file starts with a header naming fingerprints of the source it was made from
// and of the V8 data; anything that does not match is ignored and the bundle compiles as if
// there were no cache. A cache can only cost speed, never change what runs.
import { isAscii } from 'node:buffer';
import { Script } from 'node:vm';

/** What became of the cache: only 'used' skips compiling. */
export type CacheUse = 'used' | 'missing' | 'stale' | 'corrupt' | 'rejected';

const MAGIC = 'instar-code-cache-1';

/**
 * A 64-bit fingerprint of some bytes, to catch accidental damage and stale files (nothing here
 * is adversarial: the cache is as trusted as the bundle beside it). WebAssembly because plain JS
 * runs this loop interpreted at start (~15 ms for 1.3 MB) and node:crypto costs ~2 ms to load.
 * Each 8-byte word w: h = rotl((h ^ w) * 0x100000001b3, 29), from h = the padded length; every
 * step is a bijection of h, so any one changed word changes the result.
 */
const HASH_WASM = Uint8Array.of(
  ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // "\0asm", version 1
  ...[0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7e], // types: (i32) -> i64
  ...[0x03, 0x02, 0x01, 0x00], // one function of that type
  ...[0x05, 0x03, 0x01, 0x00, 0x01], // one memory, one page to start
  ...[0x07, 0x09, 0x02, 0x01, 0x6d, 0x02, 0x00, 0x01, 0x68, 0x00, 0x00], // exports: "m" memory, "h" function
  ...[0x0a, 0x3a, 0x01, 0x38, 0x02, 0x01, 0x7f, 0x01, 0x7e], // code: one body; locals i: i32, h: i64
  ...[0x20, 0x00, 0xad, 0x21, 0x02], // h = u64(n)
  ...[0x02, 0x40, 0x03, 0x40], // block, loop
  ...[0x20, 0x01, 0x20, 0x00, 0x4f, 0x0d, 0x01], // if i >= n: break
  ...[0x20, 0x02, 0x20, 0x01, 0x29, 0x03, 0x00, 0x85], // h ^ mem64[i]
  ...[0x42, 0xb3, 0x83, 0x80, 0x80, 0x80, 0x20, 0x7e], // * 0x100000001b3
  ...[0x42, 0x1d, 0x89, 0x21, 0x02], // rotl 29 -> h
  ...[0x20, 0x01, 0x41, 0x08, 0x6a, 0x21, 0x01, 0x0c, 0x00], // i += 8; continue
  ...[0x0b, 0x0b, 0x20, 0x02, 0x0b], // end loop, end block; return h
);

let hasher: { memory: WebAssembly.Memory; hash: (n: number) => bigint } | undefined;

export function fingerprint(bytes: Uint8Array): string {
  hasher ??= (() => {
    const { exports } = new WebAssembly.Instance(new WebAssembly.Module(HASH_WASM));
    return { memory: exports.m as WebAssembly.Memory, hash: exports.h as (n: number) => bigint };
  })();
  const padded = (bytes.length + 7) & ~7;
  const short = padded - hasher.memory.buffer.byteLength;
  if (short > 0) hasher.memory.grow(Math.ceil(short / 65536));
  const view = new Uint8Array(hasher.memory.buffer, 0, padded);
  view.set(bytes);
  view.fill(0, bytes.length);
  return `${bytes.length.toString(16)}-${BigInt.asUintN(64, hasher.hash(padded)).toString(16)}`;
}

/** The bundle's text as V8 compiles it, at build time and at run time alike. */
function sourceText(source: Buffer): string {
  // esbuild writes ASCII but for a few comments; an all-ASCII file decodes ~4x faster as latin1.
  return isAscii(source) ? source.toString('latin1') : source.toString('utf8');
}

function header(source: Uint8Array, data: Uint8Array): string {
  return `${MAGIC} ${fingerprint(source)} ${fingerprint(data)}\n`;
}

/** The bundle compiled without a cache, as the build compiles it to make one. */
export function compileBundle(source: Buffer, filename: string): Script {
  return new Script(sourceText(source), { filename });
}

/** The cache file: the header, then what `script.createCachedData()` gave for this source. */
export function packCodeCache(source: Buffer, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from(header(source, data), 'latin1'), data]);
}

/** The build's half: the cache file for this bundle, made by the node that runs the build. */
export function makeCodeCache(source: Buffer, filename: string): Buffer {
  return packCodeCache(source, compileBundle(source, filename).createCachedData());
}

/** The V8 data in `cache` when its header matches this source and its own bytes, else why not. */
function checkedData(source: Buffer, cache: Buffer | undefined): Buffer | Exclude<CacheUse, 'used' | 'rejected'> {
  if (cache === undefined) return 'missing';
  const end = cache.indexOf(0x0a);
  if (end < 0 || end > 200) return 'corrupt';
  const [magic, sourcePrint, dataPrint, ...rest] = cache.toString('latin1', 0, end).split(' ');
  if (magic !== MAGIC || rest.length > 0) return 'corrupt';
  const data = cache.subarray(end + 1);
  if (fingerprint(data) !== dataPrint) return 'corrupt';
  return fingerprint(source) === sourcePrint ? data : 'stale';
}

/** The run's half: the bundle compiled, with the cache when it is the right one. */
export function compileWithCache(source: Buffer, cache: Buffer | undefined, filename: string): { script: Script; use: CacheUse } {
  const data = checkedData(source, cache);
  if (typeof data === 'string') return { script: new Script(sourceText(source), { filename }), use: data };
  const script = new Script(sourceText(source), { filename, cachedData: data });
  // Another node version, or other V8 flags (NODE_OPTIONS): V8 compiled it from scratch.
  return { script, use: script.cachedDataRejected ? 'rejected' : 'used' };
}
