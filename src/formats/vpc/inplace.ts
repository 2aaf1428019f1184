// convert -n into an existing VHD, as qemu's vpc driver writes into one. A fixed disk takes the
// data in place. A dynamic or differencing disk writes into a block the BAT has, after setting the block's
// sector bitmap to all ones (qemu does so on its first write to each block), and allocates a
// missing block at the end of the used area: the bitmap, the footer copy moved past the new
// block, the BAT entry, then the data, in qemu's order (each a complete image qemu opens).
import { readAt } from '../bytes.ts';
import { ImageError, type BlockDevice, type ImageWriter } from '../types.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';
import { unitPieces } from '../bytes.ts';
import { readFooter, FOOTER_SIZE, VHD_FIXED } from './footer.ts';
import { readDynamicHeader, type DynamicHeader } from './dynamic-header.ts';
import { FixedWriter } from './writer.ts';

const SECTOR = 512;
const UNALLOCATED = 0xffff_ffff;
/** The BAT instar keeps in memory for one copy. */
const BAT_LIMIT = 256 * 1024 * 1024;

class DynamicInPlace implements ImageWriter {
  readonly clusterSize = SECTOR;
  private readonly put: (buf: Uint8Array, pos: number) => void;
  /** Blocks whose bitmap this copy has set. */
  private readonly marked = new Set<number>();

  constructor(dev: BlockDevice, private readonly size: number, private readonly hdr: DynamicHeader, private readonly bat: Buffer, private readonly footer: Uint8Array, private freeOffset: number) {
    this.put = writableOutput(dev);
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.size);
    const { blockSize, bitmapSize } = this.hdr;
    for (const { index, within, piece } of unitPieces(data, offset, blockSize)) {
      if (index >= this.bat.length / 4) throw new ImageError(`instar refuses a write past the VHD's block table (block ${index})`);
      let sector = this.bat.readUInt32BE(index * 4);
      if (sector === UNALLOCATED) sector = this.allocate(index);
      else if (!this.marked.has(index)) this.put(new Uint8Array(bitmapSize).fill(0xff), sector * SECTOR);
      this.marked.add(index);
      this.put(piece, sector * SECTOR + bitmapSize + within);
    }
  }

  /** qemu's alloc_block: the bitmap at the free offset, the footer after the block, the BAT entry. */
  private allocate(index: number): number {
    const sector = this.freeOffset / SECTOR;
    if (sector >= UNALLOCATED) throw new ImageError('instar refuses a VHD block past the 32-bit BAT range');
    this.put(new Uint8Array(this.hdr.bitmapSize).fill(0xff), this.freeOffset);
    this.freeOffset += this.hdr.bitmapSize + this.hdr.blockSize;
    this.put(this.footer, this.freeOffset);
    const entry = Buffer.alloc(4);
    entry.writeUInt32BE(sector);
    this.put(entry, Number(this.hdr.tableOffset) + index * 4);
    this.bat.writeUInt32BE(sector, index * 4);
    return sector;
  }

  finish(): void {}
}

export function vpcInPlaceWriter(dev: BlockDevice, virtualSize: number): ImageWriter | { refused: string } {
  const refused = (why: string) => ({ refused: `instar cannot convert into this vpc image (${why}); nothing was written` });
  const footer = readFooter(dev);
  if (footer.diskType === VHD_FIXED || !footer.atStart) {
    if (virtualSize > dev.size - FOOTER_SIZE) return refused('its file is shorter than its disk');
    return new FixedWriter(dev, virtualSize);
  }
  // A differencing disk (4) is written as a dynamic one: qemu's vpc driver never opens its parent,
  // so new blocks hide nothing and the parent is not touched.
  if (footer.diskType !== 3 && footer.diskType !== 4) return refused(`its disk type is ${footer.diskType}`);
  const hdr = readDynamicHeader(dev, footer.dataOffset, BigInt(virtualSize / SECTOR));
  if (hdr.maxTableEntries * 4 > BAT_LIMIT) return refused('its block table is too large');
  const bat = Buffer.from(readAt(dev, Number(hdr.tableOffset), hdr.maxTableEntries * 4));
  // qemu's free_data_block_offset: after the table, then after every block the table has.
  let free = Math.ceil((Number(hdr.tableOffset) + bat.length) / SECTOR) * SECTOR;
  for (let i = 0; i < hdr.maxTableEntries; i++) {
    const sector = bat.readUInt32BE(i * 4);
    if (sector !== UNALLOCATED) free = Math.max(free, sector * SECTOR + hdr.bitmapSize + hdr.blockSize);
  }
  return new DynamicInPlace(dev, virtualSize, hdr, bat, readAt(dev, 0, FOOTER_SIZE), free);
}
