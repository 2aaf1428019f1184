// Writes guest data into a Parallels image that create has just laid out, as qemu's parallels
// driver does under qemu-img convert. A cluster is allocated on its first write as the next one
// after data_off and the clusters allocated so far; qemu preallocates the file ahead with zeros
// and cuts it back to the last allocated cluster at close, so every allocated cluster is in the
// file whole (zeros around what was written). The BAT (entries in clusters, from byte 64 of the
// header sector up to data_off) is kept in memory and written in finish(); the header is left as
// create wrote it (qemu marks it in use while writing and clears the mark at close).
import { unitPieces } from '../bytes.ts';
import { ImageError, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';

const SECTOR = 512;
const BAT_OFFSET = 64;
/** The unit the caller writes in (qemu-img convert's default -S skips 4 KiB blocks of zeros). */
const WRITE_UNIT = 4096;
const U32_LIMIT = 2 ** 32;

/** What the writer needs of create's plan (src/formats/parallels/create.ts). */
interface ParallelsPlanView {
  size: number;
  clusterSize: number;
}

class ParallelsWriter implements ImageWriter {
  readonly clusterSize = WRITE_UNIT;
  private readonly put: (buf: Uint8Array, pos: number) => void;
  private readonly cs: number;
  /** The BAT and the zeros after it up to data_off, as on disk. */
  private readonly bat: Buffer;
  private readonly entries: number;
  /** The next cluster to allocate (qemu's data_end, in clusters). */
  private next: number;

  constructor(files: WriterFiles, private readonly plan: ParallelsPlanView) {
    this.put = writableOutput(files.image);
    this.cs = plan.clusterSize;
    this.entries = Math.ceil(plan.size / this.cs);
    // create's data_off: the header and BAT rounded up to whole clusters.
    const dataOff = Math.ceil((BAT_OFFSET + 4 * this.entries) / this.cs) * this.cs;
    this.bat = Buffer.alloc(dataOff - BAT_OFFSET);
    this.next = dataOff / this.cs;
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.plan.size);
    for (const { index, within, piece } of unitPieces(data, offset, this.cs)) {
      if (index >= this.entries) throw new ImageError(`instar refuses a write past the Parallels BAT (cluster ${index})`);
      let cluster = this.bat.readUInt32LE(index * 4);
      if (cluster === 0) {
        if (this.next >= U32_LIMIT) throw new ImageError('instar refuses a Parallels cluster past the 32-bit BAT range');
        cluster = this.next++;
        this.bat.writeUInt32LE(cluster, index * 4);
        if (piece.length < this.cs) {
          const whole = Buffer.alloc(this.cs);
          whole.set(piece, within);
          this.put(whole, cluster * this.cs);
          continue;
        }
      }
      this.put(piece, cluster * this.cs + within);
    }
  }

  finish(): void {
    this.put(this.bat, BAT_OFFSET);
  }
}

export const parallelsWriter: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const plan = raw as unknown as ParallelsPlanView;
    if (!Number.isSafeInteger(plan.size) || !Number.isSafeInteger(plan.clusterSize) || plan.clusterSize < SECTOR) {
      throw new ImageError('instar cannot write a Parallels image of this geometry');
    }
    return new ParallelsWriter(files, plan);
  },
};
