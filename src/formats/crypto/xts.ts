// XTS over many sectors at once (AES from node:crypto, or any 16-byte block cipher of block-ecb.ts). node:crypto's XTS takes one data unit (sector) per cipher
// object, and creating one per 512-byte sector costs more than the AES itself. XTS is ECB between
// two XORs with a tweak sequence (T0 = E_k2(IV), T[j+1] = T[j]·x in GF(2^128)), so a whole run is
// one ECB call for the tweak starts, one ECB call for the data, and the tweak arithmetic in JS.
// Sectors are whole 16-byte blocks here (512 or 4096 bytes): no ciphertext stealing is needed.
import { blockEcb as ecb } from './block-ecb.ts';
import { endianness } from 'node:os';

/** The tweak arithmetic below reads 32-bit words in host order: little-endian hosts only. */
export const XTS_BATCHED = endianness() === 'LE';

/** A 4-byte-aligned copy when `b` is not aligned (Uint32Array views need alignment). */
function words(b: Uint8Array): Uint32Array {
  return new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
}

function aligned(b: Uint8Array): Uint8Array {
  return b.byteOffset % 4 === 0 ? b : Uint8Array.from(b);
}

/**
 * Decrypts `buf` (whole sectors of `sectorSize` bytes) in place. `ivs` holds each sector's
 * 16-byte IV; `key` is the XTS key (data key, then tweak key), `alg` e.g. "aes-256".
 */
export function xtsDecrypt(alg: string, key: Uint8Array, buf: Uint8Array, ivs: Uint8Array, sectorSize: number): void {
  const half = key.length / 2;
  const count = buf.length / sectorSize;
  const starts = words(aligned(ecb(alg, key.subarray(half), ivs, true)));
  const data = aligned(buf);
  const d = words(data);
  const tweaks = new Uint32Array(data.length / 4);
  const wordsPerSector = sectorSize / 4;
  for (let s = 0; s < count; s++) {
    let w0 = starts[s * 4], w1 = starts[s * 4 + 1], w2 = starts[s * 4 + 2], w3 = starts[s * 4 + 3];
    const end = (s + 1) * wordsPerSector;
    for (let at = s * wordsPerSector; at < end; at += 4) {
      // Keep the tweak for after the ECB pass, and whiten the ciphertext with it now.
      tweaks[at] = w0;
      tweaks[at + 1] = w1;
      tweaks[at + 2] = w2;
      tweaks[at + 3] = w3;
      d[at] ^= w0;
      d[at + 1] ^= w1;
      d[at + 2] ^= w2;
      d[at + 3] ^= w3;
      // Multiply by x: a 128-bit little-endian left shift, reduced by x^128 = x^7 + x^2 + x + 1.
      const carry = w3 >>> 31;
      w3 = (w3 << 1) | (w2 >>> 31);
      w2 = (w2 << 1) | (w1 >>> 31);
      w1 = (w1 << 1) | (w0 >>> 31);
      w0 = (w0 << 1) ^ (carry * 0x87);
    }
  }
  const plain = aligned(ecb(alg, key.subarray(0, half), data, false));
  const p = words(plain);
  for (let i = 0; i < p.length; i++) p[i] ^= tweaks[i];
  buf.set(plain);
}
