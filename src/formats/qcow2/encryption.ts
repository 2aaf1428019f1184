// Reading encrypted qcow2 data, kept apart from the driver: the legacy AES method (crypt_method 1:
// AES-128-CBC, plain64 IVs numbered by guest sector, the passphrase's first 16 bytes as the key)
// and LUKS (crypt_method 2: the LUKS header in the crypto extension's area, IVs numbered by host
// sector, as qemu's crypt_physical_offset). The key arrives in OpenContext.key from the host.
import { ImageError, type BlockDevice, type OpenContext } from '../types.ts';
import { readAt } from '../bytes.ts';
import { SectorCipher } from '../crypto/sector-cipher.ts';
import { LUKS_HEADER_SIZE, luksKeyFields } from '../luks/header.ts';
import { cipherSpec, unlockMasterKey } from '../luks/unlock.ts';
import { keyRequired } from '../luks/driver.ts';
import { CRYPT, type Qcow2Header } from './header.ts';
import type { Extensions } from './extensions.ts';

const SECTOR = 512;

export interface Qcow2Crypto {
  cipher: SectorCipher;
  /** LUKS numbers IVs by host offset, legacy AES by guest offset. */
  physical: boolean;
}

/** qemu takes the secret as a C string: it ends at the first NUL byte. */
function passphrase(key: Uint8Array): Uint8Array {
  const nul = key.indexOf(0);
  return nul < 0 ? key : key.subarray(0, nul);
}

/** The decryptor of an encrypted image when a key was given; undefined when there is nothing to do yet. */
export function openQcow2Crypto(dev: BlockDevice, h: Qcow2Header, ext: Extensions, ctx: OpenContext): Qcow2Crypto | undefined {
  if (h.cryptMethod === CRYPT.none) return undefined;
  if (!ctx.key) {
    if (ctx.keyRequired) throw keyRequired('encrypt.key-secret');
    return undefined;
  }
  const pass = passphrase(ctx.key);
  if (h.cryptMethod === CRYPT.aes) {
    const key = Buffer.alloc(16);
    key.set(pass.subarray(0, 16));
    return { cipher: new SectorCipher({ alg: 'aes-128', mode: 'cbc', ivgen: 'plain64' }, key, SECTOR), physical: false };
  }
  if (!ext.crypto || !ext.luks) throw new ImageError(`Missing CRYPTO header for crypt method ${CRYPT.luks}`);
  const hdr = readAt(dev, ext.crypto.offset, LUKS_HEADER_SIZE);
  const master = unlockMasterKey(dev, Number(ext.crypto.offset), ext.luks, luksKeyFields(hdr), pass, ext.crypto.length);
  return { cipher: new SectorCipher(cipherSpec(ext.luks), master, SECTOR), physical: true };
}

/** Fills `piece` with the decrypted guest bytes at `guestOffset`, stored at `hostOffset` of `file`. */
export function readDecrypted(crypto: Qcow2Crypto, file: BlockDevice, piece: Uint8Array, hostOffset: number, guestOffset: number): void {
  // Whole sectors around the piece; clusters are whole sectors, so they stay inside the run.
  const lead = hostOffset % SECTOR;
  const length = Math.ceil((lead + piece.length) / SECTOR) * SECTOR;
  const sectors = readAt(file, hostOffset - lead, length);
  crypto.cipher.decrypt(sectors, ((crypto.physical ? hostOffset : guestOffset) - lead) / SECTOR);
  piece.set(sectors.subarray(lead, lead + piece.length));
}
