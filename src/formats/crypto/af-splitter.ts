// The anti-forensic split and merge of LUKS key material (cryptsetup's AF splitter): the stored
// material is `stripes` blocks; all but the last are folded together through a hash "diffusion",
// and the result XOR the last block is the key. The merge opens key slots; the split makes the
// key slot of a new volume (luks/create-keys.ts).
import { createHash, randomBytes } from 'node:crypto';
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

/** The anti-forensic split of `key`: stripes-1 random blocks, then the key XOR their diffused fold. */
export function afSplit(key: Uint8Array, stripes: number, hash: string): Buffer {
  const out = randomBytes(key.length * stripes);
  const acc = Buffer.alloc(key.length);
  for (let s = 0; s < stripes - 1; s++) {
    const stripe = out.subarray(s * key.length, (s + 1) * key.length);
    for (let i = 0; i < key.length; i++) acc[i] ^= stripe[i];
    diffuse(acc, hash);
  }
  const last = out.subarray((stripes - 1) * key.length);
  for (let i = 0; i < key.length; i++) last[i] = acc[i] ^ key[i];
  return out;
}
