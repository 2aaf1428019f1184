// Writes guest data into a LUKS1 volume that create has just laid out (convert -O luks): each
// 512-byte payload sector encrypted with the master key, its IV from its sector number. A fresh
// LUKS volume does not read as zeros (qemu's has_zero_init is false, and qemu-img convert writes
// the zeros too), while callers skip what reads as zeros: the writer fills every gap with
// encrypted zero sectors itself, and finish() fills the rest of the disk.
import { ImageError, type BlockDevice, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { readAt } from '../bytes.ts';
import { masterKeys, type LuksPlan } from './create.ts';
import { SECTOR, SectorEncryptor } from './encrypt.ts';
import { LUKS_HEADER_SIZE, luksKeyFields, parseLuksHeader } from './header.ts';
import { unlockMasterKey } from './unlock.ts';

/** Encrypted zeros are written this much at a time. */
const ZERO_CHUNK = 1024 * 1024;
/** The unit callers write in (qemu-img convert's -S 4k default). */
const WRITE_UNIT = 4096;

class LuksWriter implements ImageWriter {
  readonly clusterSize = WRITE_UNIT;
  private readonly put: (buf: Uint8Array, pos: number) => void;
  /** Where the payload starts in the file, and the disk's size (whole sectors). */
  private readonly payload: number;
  private readonly size: number;
  /** The first byte of the disk not written yet: writes come in ascending order. */
  private next = 0;

  constructor(dev: BlockDevice, plan: LuksPlan, private readonly encryptor: SectorEncryptor) {
    if (!dev.write) throw new ImageError('the output was not opened for writing');
    this.put = dev.write.bind(dev);
    this.payload = plan.payload;
    this.size = Math.ceil(plan.size / SECTOR) * SECTOR;
  }

  /** Encrypts `plain` (whole sectors, a copy the writer may change) and writes it at disk offset `offset`. */
  private encrypted(plain: Uint8Array, offset: number): void {
    this.encryptor.encrypt(plain, offset / SECTOR);
    this.put(plain, this.payload + offset);
  }

  private zeros(from: number, to: number): void {
    for (let pos = from; pos < to; pos += ZERO_CHUNK) this.encrypted(new Uint8Array(Math.min(ZERO_CHUNK, to - pos)), pos);
  }

  write(data: Uint8Array, offset: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > this.size - data.length) {
      throw new ImageError(`instar refuses a write of ${data.length} bytes at offset ${offset} outside the ${this.size}-byte disk`);
    }
    if (offset % SECTOR !== 0 || offset < this.next) throw new ImageError(`instar's LUKS writer takes whole sectors in ascending order (a write at ${offset})`);
    this.zeros(this.next, offset);
    // A disk of whole sectors: a short write at its end is padded with zeros.
    const plain = new Uint8Array(Math.ceil(data.length / SECTOR) * SECTOR);
    plain.set(data);
    this.encrypted(plain, offset);
    this.next = offset + plain.length;
  }

  finish(): void {
    this.zeros(this.next, this.size);
    this.next = this.size;
  }
}

/**
 * The master key: layout() keeps it for the writer opened after it; else unlocked from the header
 * (which needs the output readable: dd opens it write-only, but always after layout()).
 */
function masterKey(dev: BlockDevice, plan: LuksPlan, raw: CreatePlan): Buffer {
  const kept = masterKeys.get(raw);
  if (kept) return kept;
  const hdr = readAt(dev, 0, LUKS_HEADER_SIZE);
  return unlockMasterKey(dev, 0, parseLuksHeader(hdr), luksKeyFields(hdr), Buffer.from(plan.passphrase, 'hex'));
}

export const luksWriter: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const plan = raw as unknown as LuksPlan;
    return new LuksWriter(files.image, plan, new SectorEncryptor(plan.spec, masterKey(files.image, plan, raw)));
  },
};
