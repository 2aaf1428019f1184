// The anti-forensic merge of LUKS key material (cryptsetup's AF splitter): the stored material is
// `stripes` blocks; all but the last are folded together through a hash "diffusion", and the
// result XOR the last block is the key. Decoding only (instar never writes key slots).
import { createHash } from 'node:crypto';
import { DIGEST_BYTES, nodeHash } from './hash.ts';

/** Replaces `block` by its diffusion: each digest-sized piece i becomes H(BE32(i) || piece). */
function diffuse(block: Buffer, hash: string): void {
  const d = DIGEST_BYTES[hash];
  const counter = Buffer.alloc(4);
  for (let i = 0, at = 0; at < block.length; i++, at += d) {
    const len = Math.min(d, block.length - at);
    counter.writeUInt32BE(i >>> 0);
    const out = createHash(nodeHash(hash)).update(counter).update(block.subarray(at, at + len)).digest();
    out.copy(block, at, 0, len);
  }
}

/** Merges `material` (stripes × keyLen bytes) back into the keyLen-byte key. */
export function afMerge(material: Uint8Array, keyLen: number, stripes: number, hash: string): Buffer {
  const acc = Buffer.alloc(keyLen);
  for (let s = 0; s < stripes; s++) {
    const stripe = material.subarray(s * keyLen, (s + 1) * keyLen);
    for (let i = 0; i < keyLen; i++) acc[i] ^= stripe[i];
    if (s < stripes - 1) diffuse(acc, hash);
  }
  return acc;
}
