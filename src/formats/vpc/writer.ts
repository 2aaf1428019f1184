// Writes guest data into a VHD that create has just laid out, as qemu's vpc driver does under
// qemu-img convert. A fixed disk takes the data in place. A dynamic disk allocates a block on its
// first write, at the end of the used area (after the BAT, then after the last block): a sector
// bitmap of all ones, then the 2 MiB of data; the footer copy moves after the new last block and
// the block's BAT entry is set. qemu writes each entry and the footer at every allocation; the
// bytes left at the end are the same when the writer keeps the BAT in memory and writes it, and
// the footer at the final end, once in finish() (each earlier footer is overwritten by the next
// block's bitmap, which is exactly one sector long).
import { unitPieces } from '../bytes.ts';
import { ImageError, type BlockDevice, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { BLOCK_SIZE, footer, type VpcPlan } from './create.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';

const SECTOR = 512;
/** Where create puts the BAT (the dynamic header's table offset). */
const BAT_OFFSET = 3 * SECTOR;
/** One bit per sector of a block, rounded up to whole sectors. */
const BITMAP_SIZE = Math.ceil(BLOCK_SIZE / SECTOR / 8 / SECTOR) * SECTOR;
const UNALLOCATED = 0xffff_ffff;
/**
 * The unit qemu-img convert writes in with its default -S 4k: it skips 4 KiB blocks of zeros, so
 * a block is allocated by its first non-zero 4 KiB and the rest of it stays a hole in the file.
 * Callers skip zeros in this unit; every write reaching the writer is written, as qemu's driver
 * writes every request (-S 0 writes zeros, and allocates blocks for them, in qemu too).
 */
const WRITE_UNIT = 4096;


/** A fixed disk: the data in place (convert -n into one too: inplace.ts). */
export class FixedWriter implements ImageWriter {
  readonly clusterSize = WRITE_UNIT;
  private readonly put: (buf: Uint8Array, pos: number) => void;

  constructor(dev: BlockDevice, private readonly size: number) {
    this.put = writableOutput(dev);
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.size);
    this.put(data, offset);
  }

  finish(): void {}
}

class DynamicWriter implements ImageWriter {
  readonly clusterSize = WRITE_UNIT;
  private readonly put: (buf: Uint8Array, pos: number) => void;
  private readonly bat: Uint32Array;
  /** qemu's free_data_block_offset: where the next block (and meanwhile the footer copy) goes. */
  private freeOffset: number;

  constructor(dev: BlockDevice, private readonly plan: VpcPlan) {
    this.put = writableOutput(dev);
    const entries = Math.ceil(Math.floor(plan.size / SECTOR) / (BLOCK_SIZE / SECTOR));
    this.bat = new Uint32Array(entries).fill(UNALLOCATED);
    this.freeOffset = BAT_OFFSET + Math.ceil((entries * 4) / SECTOR) * SECTOR;
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.plan.size);
    for (const { index, within: inBlock, piece } of unitPieces(data, offset, BLOCK_SIZE)) {
      if (index >= this.bat.length) throw new ImageError(`instar refuses a write past the VHD's block table (block ${index})`);
      if (this.bat[index] === UNALLOCATED) this.allocate(index);
      this.put(piece, this.bat[index] * SECTOR + BITMAP_SIZE + inBlock);
    }
  }

  /** alloc_block: the bitmap (every sector present) at the free offset, which moves past the block. */
  private allocate(index: number): void {
    const sector = this.freeOffset / SECTOR;
    if (sector >= UNALLOCATED) throw new ImageError('instar refuses a VHD block past the 32-bit BAT range');
    this.bat[index] = sector;
    this.put(new Uint8Array(BITMAP_SIZE).fill(0xff), this.freeOffset);
    this.freeOffset += BITMAP_SIZE + BLOCK_SIZE;
  }

  finish(): void {
    const table = Buffer.alloc(this.bat.length * 4);
    this.bat.forEach((entry, i) => table.writeUInt32BE(entry, i * 4));
    this.put(table, BAT_OFFSET);
    // The footer copy at the end of the used area (its first position when nothing was allocated).
    this.put(footer(this.plan), this.freeOffset);
  }
}

export const vpcWriter: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const plan = raw as unknown as VpcPlan;
    return plan.fixed ? new FixedWriter(files.image, plan.size) : new DynamicWriter(files.image, plan);
  },
};
