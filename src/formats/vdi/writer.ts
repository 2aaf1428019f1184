// Writes guest data into a VDI that create has just laid out, as qemu's vdi driver does under
// qemu-img convert. A static image takes the data in place (create mapped every block in order).
// A dynamic one is a block-map image (block-map-writer.ts): 1 MiB blocks numbered from 0 after
// the map, written whole on allocation; finish() writes the map and the header's count of
// allocated blocks (the only header field a write changes; measured against qemu-img 7.2 and 10.0).
import { BlockMapWriter } from '../block-map-writer.ts';
import { ImageError, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';

const SECTOR = 512;
/** The block size create writes (qemu's default, the only one it creates). */
const BLOCK_SIZE = 1024 * 1024;
const UNALLOCATED = 0xffff_ffff;
/** Header field blocks_allocated; the block map follows the 512-byte header. */
const BLOCKS_ALLOCATED_AT = 0x184;
const MAP_OFFSET = SECTOR;

/** What the writer needs of create's plan (src/formats/vdi/create.ts). */
interface VdiPlanView {
  size: number;
  fixed: boolean;
}

/** static=on: every block is in the file already, in order. */
class StaticWriter implements ImageWriter {
  readonly clusterSize = 4096;
  private readonly put: (buf: Uint8Array, pos: number) => void;

  constructor(files: WriterFiles, private readonly size: number, private readonly dataOffset: number) {
    this.put = writableOutput(files.image);
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.size);
    this.put(data, this.dataOffset + offset);
  }

  finish(): void {}
}

export const vdiWriter: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const plan = raw as unknown as VdiPlanView;
    if (!Number.isSafeInteger(plan.size) || plan.size < 0) throw new ImageError('instar cannot write a VDI of this size');
    const blocks = Math.ceil(plan.size / BLOCK_SIZE);
    const dataOffset = MAP_OFFSET + Math.ceil((blocks * 4) / SECTOR) * SECTOR;
    if (plan.fixed) return new StaticWriter(files, plan.size, dataOffset);
    return new BlockMapWriter(files.image, {
      format: 'VDI',
      diskSize: plan.size,
      blockSize: BLOCK_SIZE,
      mapOffset: MAP_OFFSET,
      map: Buffer.alloc(blocks * 4, 0xff),
      unallocated: UNALLOCATED,
      firstEntry: 0,
      dataBase: dataOffset,
      allocatedCountAt: BLOCKS_ALLOCATED_AT,
    });
  },
};
