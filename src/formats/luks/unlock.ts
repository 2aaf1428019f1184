// Recovering the master key of a LUKS1 volume from a passphrase, as qemu's block-luks.c does:
// for each active key slot, PBKDF2(passphrase, slot salt) gives a key that decrypts the slot's
// AF-split material; the merged candidate is the master key when its PBKDF2 digest matches the
// header's. All work a header asks for is bounded before it starts (see crypto/kdf.ts).
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import { afMerge } from '../crypto/af-splitter.ts';
import { MAX_PBKDF2_ITERATIONS, pbkdf2 } from '../crypto/kdf.ts';
import { SectorCipher, type CipherSpec } from '../crypto/sector-cipher.ts';
import type { LuksInfo, LuksKeyFields } from './header.ts';

const DIGEST_LEN = 20;
/** Worst-case PBKDF2 work of one unlock (all slots tried): twice the per-derivation ceiling. */
const MAX_TOTAL_ITERATIONS = 2 * MAX_PBKDF2_ITERATIONS;

export function cipherSpec(info: LuksInfo): CipherSpec {
  return { alg: info['cipher-alg'], mode: info['cipher-mode'], ivgen: info['ivgen-alg'], ivHash: info['ivgen-hash-alg'] };
}

/**
 * The master key, or qemu's "Invalid password" error. `base` is where the LUKS header starts in
 * `dev` (0 for a LUKS file, the crypto header area inside a qcow2 file); `areaLength`, when
 * given, is the size of that area, which key material must not leave (qcow2).
 */
export function unlockMasterKey(dev: BlockDevice, base: number, info: LuksInfo, fields: LuksKeyFields, passphrase: Uint8Array, areaLength?: bigint): Buffer {
  // Refuse unsupported ciphers and absurd iteration counts before any PBKDF2 work.
  new SectorCipher(cipherSpec(info), Buffer.alloc(fields.keyBytes));
  fields.slots.forEach((s, i) => {
    if (s.active) checkIters(s.iterations, `LUKS key slot ${i}`);
  });
  checkIters(fields.mkDigestIters, 'LUKS master key digest');
  // Each count may be sane while eight slots together are not: bound the worst case as a whole.
  const active = fields.slots.filter((s) => s.active);
  const total = active.reduce((sum, s) => sum + s.iterations + fields.mkDigestIters, 0);
  if (total > MAX_TOTAL_ITERATIONS) {
    throw new ImageError(`LUKS key slots ask for ${total} PBKDF2 iterations in all, more than instar accepts (${MAX_TOTAL_ITERATIONS})`);
  }
  for (let i = 0; i < fields.slots.length; i++) {
    const key = openKeySlot(dev, base, info, fields, i, passphrase, areaLength);
    if (key) return key;
  }
  throw new ImageError('Invalid password, cannot unlock any keyslot');
}

/**
 * The master key when key slot `i` is active and the passphrase opens it (qemu's load_key), else
 * undefined. The caller has bounded the slot's iteration counts.
 */
export function openKeySlot(dev: BlockDevice, base: number, info: LuksInfo, fields: LuksKeyFields, i: number, passphrase: Uint8Array, areaLength?: bigint): Buffer | undefined {
  const slot = fields.slots[i];
  if (!slot.active) return undefined;
  const hash = info['hash-alg'];
  const keyLen = fields.keyBytes;
  const slotKey = pbkdf2(passphrase, slot.salt, slot.iterations, keyLen, hash, 'LUKS key slot');
  // stripes == 4000 and keyLen ≤ 64 were checked by the header parser: at most 256 000 bytes.
  const sectors = Math.ceil((keyLen * slot.stripes) / 512);
  if (areaLength !== undefined && BigInt(slot.keyOffset + sectors * 512) > areaLength) {
    throw new ImageError('Request for data outside of extension header');
  }
  // Past the end of the file reads as zeros, as in qemu: such a slot simply does not unlock.
  const material = readAt(dev, BigInt(base) + BigInt(slot.keyOffset), sectors * 512);
  new SectorCipher(cipherSpec(info), slotKey).decrypt(material, 0);
  const candidate = afMerge(material, keyLen, slot.stripes, hash);
  const check = pbkdf2(candidate, fields.mkDigestSalt, fields.mkDigestIters, DIGEST_LEN, hash, 'LUKS master key digest');
  return check.equals(fields.mkDigest) ? candidate : undefined;
}

function checkIters(n: number, what: string): void {
  if (n > MAX_PBKDF2_ITERATIONS) {
    throw new ImageError(`${what} asks for ${n} PBKDF2 iterations, more than instar accepts (${MAX_PBKDF2_ITERATIONS})`);
  }
}
