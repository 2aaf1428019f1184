// Recovering a LUKS2 volume key, as cryptsetup does: for each key slot bound to the data segment's
// digest (priority "high" first, "ignore" skipped), the KDF (PBKDF2 or Argon2) turns the passphrase
// into the key of the slot's area; the decrypted area is AF-merged into a candidate volume key;
// the candidate is the key when its PBKDF2 digest matches. All work is bounded before it starts.
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import { afMerge } from '../crypto/af-splitter.ts';
import { MAX_PBKDF2_ITERATIONS, pbkdf2 } from '../crypto/kdf.ts';
import { MAX_ARGON2_WORK_KIB, argon2Sync, checkArgon2Costs } from '../crypto/argon2.ts';
import { SectorCipher } from '../crypto/sector-cipher.ts';
import type { Luks2Keyslot, Luks2Metadata } from './luks2-metadata.ts';

/** The same words as qemu's LUKS1 driver, so callers see one message for a wrong passphrase. */
export const WRONG_PASSPHRASE = 'Invalid password, cannot unlock any keyslot';

/** Slots worth trying, in cryptsetup's order. */
function candidates(meta: Luks2Metadata): Luks2Keyslot[] {
  const bound = meta.keyslots.filter((s) => s.priority > 0 && meta.segmentDigest.keyslots.includes(s.id));
  return [...bound.filter((s) => s.priority === 2), ...bound.filter((s) => s.priority === 1)];
}

/** Refuses, before any work, costs that one slot or all slots together must not ask for. */
function checkWork(slots: Luks2Keyslot[], meta: Luks2Metadata): void {
  let pbkdf2Total = 0;
  let argon2Total = 0;
  for (const s of slots) {
    const what = `LUKS2 keyslot ${s.id}`;
    if (s.kdf.type === 'pbkdf2') {
      if (s.kdf.iterations > MAX_PBKDF2_ITERATIONS) throw new ImageError(`${what} asks for ${s.kdf.iterations} PBKDF2 iterations, more than instar accepts (${MAX_PBKDF2_ITERATIONS})`);
      pbkdf2Total += s.kdf.iterations;
    } else {
      checkArgon2Costs({ time: s.kdf.time, memory: s.kdf.memory, lanes: s.kdf.cpus }, what);
      argon2Total += s.kdf.time * s.kdf.memory;
    }
    pbkdf2Total += meta.segmentDigest.iterations;
    // Refuse ciphers instar lacks before deriving anything.
    new SectorCipher(s.areaCipher, Buffer.alloc(s.areaKeySize));
  }
  if (meta.segmentDigest.iterations > MAX_PBKDF2_ITERATIONS) {
    throw new ImageError(`LUKS2 digest asks for ${meta.segmentDigest.iterations} PBKDF2 iterations, more than instar accepts (${MAX_PBKDF2_ITERATIONS})`);
  }
  if (pbkdf2Total > 2 * MAX_PBKDF2_ITERATIONS) throw new ImageError(`LUKS2 keyslots ask for ${pbkdf2Total} PBKDF2 iterations in all, more than instar accepts (${2 * MAX_PBKDF2_ITERATIONS})`);
  if (argon2Total > 2 * MAX_ARGON2_WORK_KIB) throw new ImageError(`LUKS2 keyslots ask for more Argon2 work in all (${argon2Total} KiB-passes) than instar accepts (${2 * MAX_ARGON2_WORK_KIB})`);
}

function slotKey(slot: Luks2Keyslot, passphrase: Uint8Array): Buffer {
  const what = `LUKS2 keyslot ${slot.id}`;
  const k = slot.kdf;
  if (k.type === 'pbkdf2') return pbkdf2(passphrase, k.salt, k.iterations, slot.areaKeySize, k.hash, what);
  return argon2Sync({ type: k.type, password: passphrase, salt: k.salt, time: k.time, memory: k.memory, lanes: k.cpus, length: slot.areaKeySize }, what);
}

/** The volume key, or qemu's wrong-passphrase error. May throw Argon2Pending (see crypto/argon2.ts). */
export function unlockLuks2(dev: BlockDevice, meta: Luks2Metadata, passphrase: Uint8Array): Buffer {
  const slots = candidates(meta);
  checkWork(slots, meta);
  const d = meta.segmentDigest;
  for (const slot of slots) {
    const key = slotKey(slot, passphrase);
    // Bounded by the metadata checks: stripes ≤ 4000 and key_size ≤ 128, and within its area.
    const length = Math.ceil((slot.keySize * slot.stripes) / 512) * 512;
    if (slot.areaOffset + length > dev.size) throw new ImageError(`LUKS2 keyslot ${slot.id}: key material lies past the end of the file`);
    const material = readAt(dev, slot.areaOffset, length);
    new SectorCipher(slot.areaCipher, key, 512).decrypt(material, 0);
    const candidate = afMerge(material, slot.keySize, slot.stripes, slot.afHash);
    if (pbkdf2(candidate, d.salt, d.iterations, d.digest.length, d.hash, 'LUKS2 digest').equals(d.digest)) return candidate;
  }
  throw new ImageError(WRONG_PASSPHRASE);
}
