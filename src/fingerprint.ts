// A fast 64-bit fingerprint of a trusted build product (the CLI's and the guest's V8 code caches,
// src/cli/code-cache.ts and src/guest/loader.ts), to tell a stale or damaged file from a good one.

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
