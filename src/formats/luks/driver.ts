// The luks format driver (qemu's block/crypto.c over crypto/block-luks.c): a LUKS1 header, key
// slots, then the encrypted payload that is the disk. `info` needs no key (qemu opens without
// I/O); reading needs the passphrase, which the host passes in OpenContext.key.
import { luksResize } from './resize.ts';
import { ImageError, type BlockDevice, type Driver, type Extent, type Image, type NodeInfo, type OpenContext } from '../types.ts';
import { readAt } from '../bytes.ts';
import { readPayload } from './payload.ts';
import { SectorCipher } from '../crypto/sector-cipher.ts';
import { LUKS_HEADER_SIZE, LUKS_MAGIC, luksKeyFields, parseLuksHeader, type LuksInfo } from './header.ts';
import { cipherSpec, unlockMasterKey } from './unlock.ts';
import { isLuks2 } from './luks2-header.ts';
import { Luks2Image } from './luks2-image.ts';
import { luksMeasure } from './measure.ts';
import { luksCreate } from './create.ts';
import { luksWriter } from './writer.ts';
import { luksAmend } from './amend.ts';
import { SectorEncryptor } from './encrypt.ts';

const SECTOR = 512;

/** qemu's wording when an encrypted image is opened for I/O without a key. */
export function keyRequired(option: string): ImageError {
  return new ImageError(`Parameter '${option}' is required for cipher`);
}

class LuksImage implements Image {
  readonly format = 'luks';
  readonly virtualSize: number;
  private cipher?: SectorCipher;
  private encryptor?: SectorEncryptor;

  constructor(private dev: BlockDevice, private hdr: Buffer, private luks: LuksInfo, ctx: OpenContext) {
    // qemu unlocks the volume first, then sizes the disk: the file's length less the payload
    // offset, counted in whole 512-byte sectors.
    if (ctx.key) this.unlock(ctx.key);
    else if (ctx.keyRequired) throw keyRequired('key-secret');
    const payload = luks['payload-offset'];
    if (payload > dev.size) throw new ImageError('Could not refresh total sector count: Input/output error');
    this.virtualSize = Math.ceil((dev.size - payload) / SECTOR) * SECTOR;
  }

  private unlock(secret: Uint8Array): void {
    // qemu takes the secret as a C string: it ends at the first NUL byte.
    const nul = secret.indexOf(0);
    const passphrase = nul < 0 ? secret : secret.subarray(0, nul);
    const key = unlockMasterKey(this.dev, 0, this.luks, luksKeyFields(this.hdr), passphrase);
    this.cipher = new SectorCipher(cipherSpec(this.luks), key, SECTOR);
    this.encryptor = new SectorEncryptor(cipherSpec(this.luks), key);
  }

  /**
   * convert -n: guest bytes written in place, encrypted with the volume's master key. A sector
   * the bytes cover in part keeps the rest of its plaintext (read, merged, encrypted again), as
   * qemu's block layer does for a driver with 512-byte request alignment.
   */
  overwrite(plain: Uint8Array, offset: number): void {
    if (!this.encryptor || !this.dev.write) throw keyRequired('key-secret');
    const end = offset + plain.length;
    if (!Number.isSafeInteger(offset) || offset < 0 || end > this.virtualSize) {
      throw new ImageError(`instar refuses a write of ${plain.length} bytes at offset ${offset} outside the ${this.virtualSize}-byte disk`);
    }
    const start = offset - (offset % SECTOR);
    const sectors = new Uint8Array(Math.ceil((end - start) / SECTOR) * SECTOR);
    if (start !== offset || end % SECTOR !== 0) this.read(sectors, start);
    sectors.set(plain, offset - start);
    this.encryptor.encrypt(sectors, start / SECTOR);
    this.dev.write(sectors, this.luks['payload-offset'] + start);
  }

  info(): NodeInfo {
    return {
      format: 'luks',
      'dirty-flag': false,
      'virtual-size': this.virtualSize,
      encrypted: true,
      'format-specific': { type: 'luks', data: { ...this.luks } },
    };
  }

  read(buf: Uint8Array, offset: number): void {
    if (!this.cipher) throw keyRequired('key-secret');
    readPayload({ dev: this.dev, cipher: this.cipher, offset: this.luks['payload-offset'], virtualSize: this.virtualSize, ivOf: (sector) => sector }, buf, offset);
  }

  extent(offset: number, length: number): Extent {
    return { offset, length: Math.min(length, this.virtualSize - offset), kind: 'data', depth: 0 };
  }
}

export const luksDriver: Driver = {
  name: 'luks',
  // qemu: the magic and version 1 (LUKS2 volumes are not this driver's).
  probe: (head) => (head.length >= 8 && Buffer.from(head.subarray(0, 6)).equals(LUKS_MAGIC) && head[6] === 0 && head[7] === 1 ? 100 : 0),
  open: (dev, ctx) => {
    const hdr = readAt(dev, 0, LUKS_HEADER_SIZE);
    // LUKS2: read by instar in default mode; refused as qemu does with --unsafe-quirks (docs/luks2.md).
    if (isLuks2(hdr) && !ctx.unsafeQuirks) return new Luks2Image(dev, ctx);
    return new LuksImage(dev, hdr, parseLuksHeader(hdr), ctx);
  },
  measure: luksMeasure,
  create: luksCreate,
  writer: luksWriter,
  resize: luksResize,
  amend: luksAmend,
};
