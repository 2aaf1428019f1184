// CRC-32C (Castagnoli) as VHDX uses it: the standard initial value and final inversion, with the
// checksum field itself taken as zero. SheetJS's crc-32 is pure JS and synchronous.
import CRC32C from 'crc-32/crc32c.js';

/** CRC-32C of `bytes`, continuing from a previous result `seed` (0 to start). */
export function crc32c(bytes: Uint8Array, seed = 0): number {
  return CRC32C.buf(bytes, seed) >>> 0;
}

/** Whether the little-endian CRC-32C stored at `field` matches `bytes` with that field zeroed. */
export function checksumValid(bytes: Uint8Array, field: number): boolean {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stored = view.getUint32(field, true);
  const copy = bytes.slice();
  copy.fill(0, field, field + 4);
  return crc32c(copy) === stored;
}
