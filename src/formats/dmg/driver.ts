// qemu's "dmg" format: Apple UDIF disk images, read as qemu's block/dmg.c reads them (zero,
// ignored, raw and zlib chunks; bzip2 and lzfse chunks fail with EIO as in Debian's qemu-img,
// which has neither module). A read unpacks the whole chunk a sector is in and keeps the last
// one. qemu has no block status for dmg: map reports every byte as data with no host offset.
import { inflateSync } from 'node:zlib';
import { ImageError, type BlockDevice, type Driver, type Extent, type Image, type NodeInfo, type OpenContext, type SizeQueryFailure } from '../types.ts';
import { IoError, readAt } from '../bytes.ts';
import { openingAs } from '../vpc/file-read.ts';
import { sizeFromSectorCount, sizeFailureError } from '../sector-count.ts';
import { readDmgTable, UDIG, UDRW, UDZE, UDZO, type Chunk, type DmgTable } from './table.ts';

const SECTOR = 512;
const U64 = (1n << 64n) - 1n;

export class DmgImage implements Image {
  readonly format = 'dmg';
  readonly virtualSize: number;
  readonly sizeFailure?: SizeQueryFailure;
  private current = -1;
  private unpacked: Buffer = Buffer.alloc(0);

  constructor(
    private readonly dev: BlockDevice,
    private readonly table: DmgTable,
    /** The size as qemu's open leaves it, and how its size queries fail (sector-count.ts). */
    size: { virtualSize: number; sizeFailure?: SizeQueryFailure },
  ) {
    this.virtualSize = size.virtualSize;
    this.sizeFailure = size.sizeFailure;
  }

  /** Lines qemu prints as warnings when it opens the image. */
  get warnings(): string[] {
    return this.table.warnings;
  }

  info(): NodeInfo {
    return { format: 'dmg', 'virtual-size': this.virtualSize };
  }

  private contains(c: Chunk, sector: bigint): boolean {
    return c.sector <= sector && ((c.sector + c.sectorCount) & U64) > sector;
  }

  /**
   * search_chunk: a binary search that assumes the table is ordered (qemu does not check). Its
   * upper bound starts one past the last chunk, which decides where overlapping chunks are found;
   * reaching that index (qemu reads past its table there) is a miss either way.
   */
  private search(sector: bigint): number {
    const chunks = this.table.chunks;
    let low = 0;
    let high = chunks.length;
    while (low <= high) {
      const mid = Math.floor((low + high) / 2);
      if (mid >= chunks.length) return -1;
      const c = chunks[mid];
      if (c.sector > sector) {
        if (mid === 0) return -1;
        high = mid - 1;
      } else if (((c.sector + c.sectorCount) & U64) > sector) return mid;
      else low = mid + 1;
    }
    return -1;
  }

  /** dmg_read_chunk: makes the chunk holding `sector` the current one, unpacked. */
  private load(sector: bigint): Chunk {
    const chunks = this.table.chunks;
    if (this.current >= 0 && this.contains(chunks[this.current], sector)) return chunks[this.current];
    const index = this.search(sector);
    if (index < 0) throw new IoError();
    const c = chunks[index];
    this.current = -1;
    if (c.type === UDZO) {
      const out = Number(c.sectorCount) * SECTOR;
      let bytes: Buffer;
      try {
        bytes = inflateSync(readAt(this.dev, c.offset, c.length), { maxOutputLength: Math.max(out, 1) });
      } catch {
        throw new IoError();
      }
      if (bytes.length !== out) throw new IoError();
      this.unpacked = bytes;
    } else if (c.type === UDRW) {
      // A length short of sectorCount sectors leaves the rest of qemu's buffer as it was (stale
      // bytes); instar reads zeros there. A longer one is read whole, and only sectorCount used.
      const bytes = Buffer.alloc(Math.max(Number(c.sectorCount) * SECTOR, c.length));
      bytes.set(readAt(this.dev, c.offset, c.length));
      this.unpacked = bytes;
    }
    this.current = index;
    return c;
  }

  read(buf: Uint8Array, offset: number): void {
    if (this.sizeFailure) throw sizeFailureError(this.sizeFailure);
    for (let done = 0; done < buf.length; ) {
      const sector = BigInt(Math.floor((offset + done) / SECTOR));
      const c = this.load(sector);
      // As many whole sectors of this chunk as the request still wants.
      const left = (c.sector + c.sectorCount - sector) & U64;
      const n = Math.min(buf.length - done, Number(left > 1n << 40n ? 1n << 40n : left) * SECTOR);
      const part = buf.subarray(done, done + n);
      if (c.type === UDZE || c.type === UDIG) part.fill(0);
      else {
        const from = Number(sector - c.sector) * SECTOR;
        part.set(this.unpacked.subarray(from, from + n));
      }
      done += n;
    }
  }

  extent(offset: number, length: number): Extent {
    if (this.sizeFailure) throw sizeFailureError(this.sizeFailure);
    return { offset, length: Math.min(length, this.virtualSize - offset), kind: 'data', depth: 0 };
  }
}

export function openDmg(dev: BlockDevice, ctx: OpenContext): DmgImage {
  return openingAs(ctx.displayName, () => {
    const table = readDmgTable(dev);
    // A byte size past int64 that wraps to a small one opens, and then fails each command's size
    // query in that command's words (sector-count.ts).
    const { bytes, sizeFailure } = sizeFromSectorCount(table.totalSectors);
    // Sizes up to BDRV_MAX_LENGTH are kept as numbers; the rare ones a double cannot hold exactly
    // (an odd sector count past 2^53) are refused rather than rounded.
    if (BigInt(Number(bytes)) !== bytes) throw new ImageError('Image size is too large for this reader');
    return new DmgImage(dev, table, { virtualSize: Number(bytes), sizeFailure });
  });
}

export const dmgDriver: Driver = {
  name: 'dmg',
  probe: (_head, name) => (name && name.length > 4 && name.endsWith('.dmg') ? 2 : 0),
  open: openDmg,
};
