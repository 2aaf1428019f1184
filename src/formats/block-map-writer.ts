// The writer of formats whose image is a header, one map of 32-bit little-endian entries (one per
// block of the disk) and the blocks in the order they were first written: VDI and Parallels.
// qemu's drivers allocate a block on its first write, as the next one after those allocated so
// far, and the whole block reaches the file at once (VDI writes it zero-filled around the
// request; Parallels preallocates with zeros and cuts the file back at close), so the file has no
// holes inside an allocated block. The map stays in memory and is written once, in finish(): the
// bytes left at the end are those of qemu's write-through of each entry.
import { unitPieces } from './bytes.ts';
import { ImageError, type BlockDevice, type ImageWriter } from './types.ts';
import { checkWriteRange, writableOutput } from './writer-checks.ts';

/** The unit the caller writes in (qemu-img convert's default -S skips 4 KiB blocks of zeros). */
const WRITE_UNIT = 4096;
const U32_LIMIT = 2 ** 32 - 1;

export interface BlockMapLayout {
  /** Names the format in refusals. */
  format: string;
  diskSize: number;
  blockSize: number;
  /** Where the map is in the file, and its bytes on disk (entries first, then any padding, all written in finish()). */
  mapOffset: number;
  map: Buffer;
  /** The entry of a block not allocated. */
  unallocated: number;
  /** The entry the first new block gets; a block's data is at dataBase + entry * blockSize. */
  firstEntry: number;
  dataBase: number;
  /** A header field counting the allocated blocks (uint32 LE), rewritten in finish(). */
  allocatedCountAt?: number;
  /** Blocks the image has already (convert -n into an existing one): new ones come after them. */
  allocated?: number;
}

export class BlockMapWriter implements ImageWriter {
  readonly clusterSize = WRITE_UNIT;
  private readonly put: (buf: Uint8Array, pos: number) => void;
  private readonly entries: number;
  private next: number;

  constructor(dev: BlockDevice, private readonly layout: BlockMapLayout) {
    this.put = writableOutput(dev);
    this.entries = Math.ceil(layout.diskSize / layout.blockSize);
    this.next = layout.firstEntry + (layout.allocated ?? 0);
  }

  write(data: Uint8Array, offset: number): void {
    const l = this.layout;
    checkWriteRange(data, offset, l.diskSize);
    for (const { index, within, piece } of unitPieces(data, offset, l.blockSize)) {
      if (index >= this.entries) throw new ImageError(`instar refuses a write past the ${l.format} block map (block ${index})`);
      let entry = l.map.readUInt32LE(index * 4);
      if (entry !== l.unallocated) {
        this.put(piece, l.dataBase + entry * l.blockSize + within);
        continue;
      }
      if (this.next >= U32_LIMIT) throw new ImageError(`instar refuses a ${l.format} block past the 32-bit map range`);
      entry = this.next++;
      l.map.writeUInt32LE(entry, index * 4);
      const block = Buffer.alloc(l.blockSize);
      block.set(piece, within);
      this.put(block, l.dataBase + entry * l.blockSize);
    }
  }

  finish(): void {
    const l = this.layout;
    if (l.allocatedCountAt !== undefined) {
      const count = Buffer.alloc(4);
      count.writeUInt32LE(this.next - l.firstEntry);
      this.put(count, l.allocatedCountAt);
    }
    this.put(l.map, l.mapOffset);
  }
}
