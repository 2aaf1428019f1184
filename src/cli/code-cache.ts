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
import { fingerprint } from '../fingerprint.ts';

/** What became of the cache: only 'used' skips compiling. */
export type CacheUse = 'used' | 'missing' | 'stale' | 'corrupt' | 'rejected';

const MAGIC = 'instar-code-cache-1';

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
