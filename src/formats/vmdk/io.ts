// Reads from a device the way qemu's block layer does: positions are signed 64-bit values
// (negative or past the block layer's limit fail with EIO), and bytes past end of file read as
// zeros. Whatever an image claims, an allocation is sized by what the file can hold.
import type { BlockDevice } from '../types.ts';

/** qemu's BDRV_MAX_LENGTH: INT64_MAX aligned down to 1 GiB. */
const MAX_LENGTH = (1n << 63n) - (1n << 30n);
const MASK64 = (1n << 64n) - 1n;

/** Reinterprets the low 64 bits of `v` as a signed int64, as C's conversions do. */
export function toInt64(v: bigint): bigint {
  const u = v & MASK64;
  return u >= 1n << 63n ? u - (1n << 64n) : u;
}

/** True when qemu's block layer would refuse a request at `pos` of `len` bytes. */
export function outOfRange(pos: bigint, len: number): boolean {
  return pos < 0n || pos + BigInt(len) > MAX_LENGTH;
}

/**
 * Fills `buf` from `pos`, zeros past end of file. The caller checked `outOfRange`; positions
 * past end of file never reach the device, so huge offsets cost nothing.
 */
export function readZeroPadded(dev: BlockDevice, buf: Uint8Array, pos: number | bigint): void {
  const p = typeof pos === 'bigint' ? pos : BigInt(pos);
  const size = BigInt(dev.size);
  let got = 0;
  if (p < size) {
    const avail = Number(size - p);
    got = dev.read(avail < buf.length ? buf.subarray(0, avail) : buf, Number(p));
  }
  if (got < buf.length) buf.fill(0, got);
}

/** Little-endian 32-bit view of a byte buffer (copies only on a big-endian host). */
export function u32le(bytes: Uint8Array): Uint32Array {
  if (LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out = new Uint32Array(bytes.length >>> 2);
  for (let i = 0; i < out.length; i++) out[i] = dv.getUint32(i * 4, true);
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
