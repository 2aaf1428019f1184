// Writes guest data into a VHDX that create has just laid out, as qemu's vhdx driver does under
// qemu-img convert (vhdx_co_writev). A block whose BAT entry is FULLY_PRESENT (a fixed disk made
// with block_state_zero=off) takes the data in place. Any other block is allocated on its first
// write at the file's length rounded up to 1 MiB, the file growing by one whole block
// (vhdx_allocate_block); its entry becomes FULLY_PRESENT. qemu logs each entry change and replays
// the log at once: instar writes the same log entries (writer-log.ts) and the changed BAT pages
// directly, once, in finish(). The headers stay as create wrote them (log GUID zero, so no reader
// replays anything); qemu's differ only by fresh GUIDs and higher sequence numbers.
import { ImageError, type BlockDevice, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { batGeometry, type VhdxPlan } from './create.ts';
import { LOG_ENTRY_SIZE, logEntry } from './writer-log.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';

const MiB = 1024 * 1024;
const PAGE = 4096;
/** create puts the log right after the first MiB (the header section). */
const LOG_OFFSET = MiB;
const FULLY_PRESENT = 6n;
const ZERO = 2n;
const OFFSET_MASK = 0xffff_ffff_fff0_0000n;
/**
 * The unit callers write in: qemu-img convert's default -S 4k. Every write that reaches the
 * writer is written (with -S 0 qemu writes the zeros too, and allocates blocks for them).
 */
const WRITE_UNIT = 4096;

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;

class VhdxWriter implements ImageWriter {
  readonly clusterSize = WRITE_UNIT;
  private readonly put: (buf: Uint8Array, pos: number) => void;
  private readonly bat: ReturnType<typeof batGeometry>;
  /** BAT pages read so far, by page index; only the changed ones are written back. */
  private readonly pages = new Map<number, Buffer>();
  private readonly changed = new Set<number>();
  /** bdrv_getlength of the file as qemu's driver sees it: create's length, then each new block's end. */
  private fileLength: number;
  private logPosition = 0;
  private sequence = 1n;

  constructor(private readonly dev: BlockDevice, private readonly plan: VhdxPlan) {
    this.put = writableOutput(dev);
    this.bat = batGeometry(plan);
    this.fileLength = this.bat.offset + this.bat.length + 5 * MiB + (plan.fixed ? plan.size : 0);
  }

  /**
   * A BAT page as create wrote it, rebuilt from the plan (the output may be open write-only, as
   * dd opens it): ZERO entries, FULLY_PRESENT ones of a fixed disk, or NOT_PRESENT (zero).
   */
  private page(index: number): Buffer {
    let page = this.pages.get(index);
    if (page) return page;
    page = Buffer.alloc(PAGE);
    const { fixed, zeroBlocks, size, blockSize } = this.plan;
    const ratio = this.bat.chunkRatio;
    const blocks = Math.ceil(size / blockSize);
    const dataStart = this.bat.offset + this.bat.length + 5 * MiB;
    for (let k = 0; k < PAGE / 8; k++) {
      const entry = index * (PAGE / 8) + k;
      const inChunk = entry % (ratio + 1);
      // Every chunk's last entry is its sector bitmap's, which create leaves zero.
      if (inChunk === ratio) continue;
      const block = Math.floor(entry / (ratio + 1)) * ratio + inChunk;
      if (block >= blocks) break;
      if (zeroBlocks) page.writeBigUInt64LE(ZERO, k * 8);
      else if (fixed) page.writeBigUInt64LE(BigInt(roundUp(dataStart + block * blockSize, MiB)) | FULLY_PRESENT, k * 8);
    }
    this.pages.set(index, page);
    return page;
  }

  private entryPosition(block: number): { page: number; at: number } {
    const byte = (block + Math.floor(block / this.bat.chunkRatio)) * 8;
    return { page: Math.floor(byte / PAGE), at: byte % PAGE };
  }

  /** The file offset of the block's data, allocating the block on its first write. */
  private blockOffset(block: number): number {
    const { page, at } = this.entryPosition(block);
    const table = this.page(page);
    const entry = table.readBigUInt64LE(at);
    if ((entry & 7n) === FULLY_PRESENT) return Number(entry & OFFSET_MASK);
    const offset = roundUp(this.fileLength, MiB);
    this.fileLength = offset + this.plan.blockSize;
    if (!Number.isSafeInteger(this.fileLength)) throw new ImageError('instar refuses a VHDX block past 2^53 bytes');
    table.writeBigUInt64LE(BigInt(offset) | FULLY_PRESENT, at);
    this.changed.add(page);
    this.log(page, table);
    return offset;
  }

  private log(page: number, table: Buffer): void {
    const entry = logEntry({
      tail: this.logPosition, sequence: this.sequence, fileLength: this.fileLength,
      pageOffset: this.bat.offset + page * PAGE, page: table,
    });
    this.put(entry, LOG_OFFSET + this.logPosition);
    this.logPosition = (this.logPosition + LOG_ENTRY_SIZE) % this.plan.logSize;
    this.sequence++;
  }

  write(data: Uint8Array, offset: number): void {
    const { size, blockSize } = this.plan;
    checkWriteRange(data, offset, size);
    for (let done = 0; done < data.length; ) {
      const pos = offset + done;
      const block = Math.floor(pos / blockSize);
      const inBlock = pos - block * blockSize;
      const piece = data.subarray(done, done + Math.min(data.length - done, blockSize - inBlock));
      this.put(piece, this.blockOffset(block) + inBlock);
      done += piece.length;
    }
  }

  finish(): void {
    for (const index of [...this.changed].sort((a, b) => a - b)) this.put(this.pages.get(index)!, this.bat.offset + index * PAGE);
    if (this.dev.size < this.fileLength) this.dev.truncate!(this.fileLength);
  }
}

export const vhdxWriter: WriterCapability = {
  open(files: WriterFiles, plan: CreatePlan): ImageWriter {
    return new VhdxWriter(files.image, plan as unknown as VhdxPlan);
  },
};
