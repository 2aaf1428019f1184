// Encrypted qcow2 output (convert -O qcow2 -o encrypt.format=luks or aes): the plain qcow2 writer
// places clusters and tables as qemu does; this module only changes what reaches the file for
// guest data. qemu encrypts every data cluster, LUKS with its payload key and IVs numbered by host
// sector (qcow2's crypt_physical_offset), legacy AES with AES-128-CBC, the passphrase as key and
// IVs numbered by guest sector; its copy-on-write fills the rest of each freshly allocated
// (sub)cluster with encrypted zeros: measured, no byte of a data cluster stays plaintext, also
// past the end of the disk in its last cluster.
//
// The writer sends guest data to `files.dataFile` when there is one and metadata to
// `files.image`; an image without a data file gets an encrypting view of its own file as its
// data device, so no table ever goes through the cipher.
import { ImageError, type BlockDevice, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { readAt } from '../bytes.ts';
import { masterKeys } from '../luks/create.ts';
import { SECTOR, SectorEncryptor } from '../luks/encrypt.ts';
import { LUKS_HEADER_SIZE, luksKeyFields, parseLuksHeader } from '../luks/header.ts';
import { unlockMasterKey } from '../luks/unlock.ts';
import { geometry, type Qcow2Plan } from './create.ts';
import { qcow2Writer } from './writer.ts';

/** The image file seen as the writer's data device: writes are encrypted whole sectors. */
class EncryptingDataDevice implements BlockDevice {
  /** Host write units ((sub)clusters) written once already: their copy-on-write is done. */
  private readonly written = new Set<number>();
  /**
   * The guest offset the next data write shows: the writer writes each request's bytes once, in
   * order, host run by host run (set by EncryptedWriter per request).
   */
  guestCursor = 0;

  constructor(private readonly file: BlockDevice, private readonly encryptor: SectorEncryptor, private readonly unit: number, private readonly physical: boolean) {}

  get size(): number {
    return this.file.size;
  }

  read(buf: Uint8Array, pos: number): number {
    return this.file.read(buf, pos);
  }

  write(data: Uint8Array, at: number): void {
    if (data.length === 0) return;
    const unit = this.unit;
    const firstUnit = Math.floor(at / unit);
    const lastUnit = Math.floor((at + data.length - 1) / unit);
    // A unit written for the first time gets its head and tail as encrypted zeros (qemu's COW).
    const start = this.written.has(firstUnit) ? at : firstUnit * unit;
    const end = this.written.has(lastUnit) ? at + data.length : (lastUnit + 1) * unit;
    if (start % SECTOR !== 0 || end % SECTOR !== 0) {
      throw new ImageError(`instar's encrypted qcow2 writer takes whole sectors (a write of ${data.length} bytes at ${at})`);
    }
    const guest = this.guestCursor;
    this.guestCursor += data.length;
    const plain = new Uint8Array(end - start);
    plain.set(data, at - start);
    // A unit is contiguous in both spaces: its guest offsets follow from the write's.
    this.encryptor.encrypt(plain, (this.physical ? start : guest - (at - start)) / SECTOR);
    this.file.write!(plain, start);
    for (let u = firstUnit; u <= lastUnit; u++) this.written.add(u);
  }

  truncate(length: number): void {
    this.file.truncate!(length);
  }
}

/** The plain writer with every request's guest offset handed to the encrypting device first. */
class EncryptedWriter implements ImageWriter {
  readonly clusterSize: number;
  constructor(private readonly inner: ImageWriter, private readonly device: EncryptingDataDevice) {
    this.clusterSize = inner.clusterSize;
    if (inner.writeZeroes) this.writeZeroes = (offset, length) => {
      device.guestCursor = offset;
      inner.writeZeroes!(offset, length);
    };
    if (inner.storeBitmaps) this.storeBitmaps = (list) => inner.storeBitmaps!(list);
  }

  writeZeroes?: ImageWriter['writeZeroes'];
  storeBitmaps?: ImageWriter['storeBitmaps'];

  write(data: Uint8Array, offset: number): void {
    this.device.guestCursor = offset;
    this.inner.write(data, offset);
  }

  finish(): void {
    this.inner.finish();
  }
}

/** The payload key: layout() keeps it for the writer opened right after it; else unlocked from the header it wrote. */
function payloadKey(image: BlockDevice, p: Qcow2Plan, raw: CreatePlan): Uint8Array {
  const kept = masterKeys.get(raw);
  if (kept) return kept;
  const luks = p.luks!;
  const base = geometry(p).cryptoOffset;
  const hdr = readAt(image, base, LUKS_HEADER_SIZE);
  return unlockMasterKey(image, base, parseLuksHeader(hdr), luksKeyFields(hdr), Buffer.from(luks.passphrase, 'hex'), BigInt(luks.payload));
}

export const encryptedQcow2Writer: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const p = raw as unknown as Qcow2Plan;
    if (!p.luks && !p.aes) throw new ImageError('the plan is not encrypted');
    // Preallocated clusters hold plaintext zeros (qemu then writes every zero); a data file changes the IVs' meaning.
    if (p.metadata || p.full) throw new ImageError('instar cannot write encrypted qcow2 images with preallocation yet; nothing was copied');
    if (p.dataFile !== undefined) throw new ImageError('instar cannot write encrypted qcow2 images with a data file yet; nothing was copied');
    const unit = 2 ** p.clusterBits / (p.extendedL2 ? 32 : 1);
    const encryptor = p.luks
      ? new SectorEncryptor(p.luks.spec, payloadKey(files.image, p, raw))
      : new SectorEncryptor({ alg: 'aes-128', mode: 'cbc', ivgen: 'plain64' }, Buffer.from(p.aes!.key, 'hex'));
    const device = new EncryptingDataDevice(files.image, encryptor, unit, p.luks !== undefined);
    return new EncryptedWriter(qcow2Writer.open({ ...files, dataFile: device }, raw), device);
  },
};
