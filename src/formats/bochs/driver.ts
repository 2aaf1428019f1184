// qemu's "bochs" format: Bochs "growing" redolog images, read as qemu's block/bochs.c reads them.
// A 512-byte header, a catalog of extent indexes (0xffffffff = not allocated), then extents, each a
// sector bitmap followed by the extent's sectors. Sectors whose bitmap bit is clear read as zeros.
// qemu has no block-status for bochs, so map reports every byte as data with no host offset.
import { ImageError, type BlockDevice, type Driver, type Extent, type Image, type NodeInfo, type OpenContext } from '../types.ts';
import { IoError, readAt, requestOk } from '../bytes.ts';
import { probes } from '../probe-only.ts';
import { openingAs } from '../vpc/file-read.ts';

const HEADER_SIZE = 512;
const SECTOR = 512;
const VERSION_2 = 0x00020000;
const VERSION_1 = 0x00010000;
/** qemu caps the catalog at 1M entries (what bximage needs for ~8 TB). */
const CATALOG_MAX = 0x100000;
const EXTENT_MAX = 0x800000;
const UNALLOCATED = 0xffffffff;
const U64 = (1n << 64n) - 1n;

/** strcmp() of a fixed-size C string field against `text` (a longer field never equals it). */
function cFieldIs(h: Buffer, at: number, text: string): boolean {
  return h.toString('latin1', at, at + text.length) === text && h[at + text.length] === 0;
}

export interface BochsHeader {
  diskSize: bigint;
  headerSize: number;
  catalogSize: number;
  bitmapSize: number;
  extentSize: number;
}

/** bochs_open's checks, in qemu's order and wording. */
export function parseBochsHeader(h: Buffer): BochsHeader {
  const version = h.readUInt32LE(64);
  if (
    !cFieldIs(h, 0, 'Bochs Virtual HD Image') ||
    !cFieldIs(h, 32, 'Redolog') ||
    !cFieldIs(h, 48, 'Growing') ||
    (version !== VERSION_2 && version !== VERSION_1)
  ) {
    throw new ImageError('Image not in Bochs format');
  }
  const header = {
    // Version 1 headers lack the reserved word before the disk size.
    diskSize: h.readBigUInt64LE(version === VERSION_1 ? 84 : 88),
    headerSize: h.readUInt32LE(68),
    catalogSize: h.readUInt32LE(72),
    bitmapSize: h.readUInt32LE(76),
    extentSize: h.readUInt32LE(80),
  };
  if (header.catalogSize > CATALOG_MAX) throw new ImageError('Catalog size is too large');
  return header;
}

/** The checks qemu makes after loading the catalog. */
function checkGeometry(header: BochsHeader, totalSectors: bigint): void {
  const e = header.extentSize;
  if (e < SECTOR) throw new ImageError('Extent size must be at least 512');
  if ((e & (e - 1)) !== 0) throw new ImageError(`Extent size ${e} is not a power of two`);
  if (e > EXTENT_MAX) throw new ImageError(`Extent size ${e} is too large`);
  const perExtent = BigInt(e / SECTOR);
  if (BigInt(header.catalogSize) < (totalSectors + perExtent - 1n) / perExtent) {
    throw new ImageError('Catalog size is too small for this disk size');
  }
}

export class BochsImage implements Image {
  readonly format = 'bochs';
  readonly virtualSize: number;
  private readonly dataOffset: bigint;
  private readonly bitmapBlocks: bigint;
  private readonly extentBlocks: bigint;

  constructor(
    private readonly dev: BlockDevice,
    readonly header: BochsHeader,
    private readonly catalog: Uint32Array,
    totalSectors: bigint,
  ) {
    this.virtualSize = Number(totalSectors) * SECTOR;
    // qemu keeps these in uint32_t: the data offset wraps, the block counts of an empty field wrap.
    this.dataOffset = BigInt((header.headerSize + header.catalogSize * 4) % 2 ** 32);
    this.bitmapBlocks = BigInt(1 + Math.floor(((header.bitmapSize - 1) >>> 0) / SECTOR));
    this.extentBlocks = BigInt(1 + Math.floor(((header.extentSize - 1) >>> 0) / SECTOR));
  }

  info(): NodeInfo {
    return { format: 'bochs', 'virtual-size': this.virtualSize };
  }

  private bitmapCache: { extent: number; bits: Buffer } = { extent: -1, bits: Buffer.alloc(0) };

  /** Where extent `index` starts in the file (its bitmap), or -1n when the catalog says unallocated. */
  private extentOffset(index: number): bigint {
    const entry = this.catalog[index];
    if (entry === UNALLOCATED) return -1n;
    return (this.dataOffset + 512n * BigInt(entry) * (this.extentBlocks + this.bitmapBlocks)) & U64;
  }

  /** The bitmap byte for sector `inExtent` of an extent (read once per extent, as a whole). */
  private bitmapByte(index: number, start: bigint, inExtent: number): number {
    const bytes = Math.ceil(this.header.extentSize / SECTOR / 8);
    if (this.bitmapCache.extent !== index) {
      // qemu reads byte by byte; a bitmap that straddles the block layer's limit is read that way too.
      if (!requestOk(start, BigInt(bytes))) return readAt(this.dev, start + BigInt(Math.floor(inExtent / 8)), 1)[0];
      this.bitmapCache = { extent: index, bits: readAt(this.dev, start, bytes) };
    }
    return this.bitmapCache.bits[Math.floor(inExtent / 8)];
  }

  /** seek_to_sector for `sector`: its file offset, or 0n when it reads as zeros. */
  private sectorOffset(sector: number): bigint {
    const offset = sector * SECTOR;
    const index = Math.floor(offset / this.header.extentSize);
    const inExtent = Math.floor((offset % this.header.extentSize) / SECTOR);
    const start = this.extentOffset(index);
    if (start < 0n) return 0n;
    if (((this.bitmapByte(index, start, inExtent) >> (inExtent % 8)) & 1) === 0) return 0n;
    const block = BigInt.asIntN(64, start + 512n * (this.bitmapBlocks + BigInt(inExtent)));
    if (block < 0n) throw new IoError(); // qemu treats a negative offset as an error code
    return block;
  }

  read(buf: Uint8Array, offset: number): void {
    // qemu's driver has no sub-sector I/O: its block layer widens a request to whole sectors
    // (compare asks for a raw image's unaligned extents) and copies the part asked for.
    if (offset % SECTOR !== 0 || buf.length % SECTOR !== 0) {
      const start = offset - (offset % SECTOR);
      const whole = new Uint8Array(Math.ceil((offset + buf.length) / SECTOR) * SECTOR - start);
      this.read(whole, start);
      buf.set(whole.subarray(offset - start, offset - start + buf.length));
      return;
    }
    const sectorsPerExtent = this.header.extentSize / SECTOR;
    for (let done = 0; done < buf.length; ) {
      const sector = (offset + done) / SECTOR;
      const host = sector * SECTOR < this.virtualSize ? this.sectorOffset(sector) : 0n;
      // Following sectors of the same extent with the same state are contiguous in the file.
      let run = 1;
      const extentLeft = sectorsPerExtent - (sector % sectorsPerExtent);
      while (run < extentLeft && done + (run + 1) * SECTOR <= buf.length && (sector + run) * SECTOR < this.virtualSize) {
        const next = this.sectorOffset(sector + run);
        if (host === 0n ? next !== 0n : next !== host + BigInt(run * SECTOR)) break;
        run++;
      }
      const part = buf.subarray(done, done + run * SECTOR);
      if (host === 0n) part.fill(0);
      else {
        if (!requestOk(host, BigInt(part.length))) throw new IoError();
        part.set(readAt(this.dev, host, part.length));
      }
      done += part.length;
    }
  }

  /** No block status in qemu's driver: the generic layer calls everything allocated data. */
  extent(offset: number, length: number): Extent {
    return { offset, length: Math.min(length, this.virtualSize - offset), kind: 'data', depth: 0 };
  }
}

export function openBochs(dev: BlockDevice, ctx: OpenContext): BochsImage {
  return openingAs(ctx.displayName, () => {
    const header = parseBochsHeader(readAt(dev, 0, HEADER_SIZE));
    // At most 2^55 sectors, and the catalog check below bounds the disk to 8 TiB.
    const totalSectors = header.diskSize / 512n;
    const raw = readAt(dev, header.headerSize, header.catalogSize * 4);
    const catalog = new Uint32Array(header.catalogSize);
    for (let i = 0; i < header.catalogSize; i++) catalog[i] = raw.readUInt32LE(i * 4);
    checkGeometry(header, totalSectors);
    return new BochsImage(dev, header, catalog, totalSectors);
  });
}

export const bochsDriver: Driver = {
  name: 'bochs',
  probe: probes.bochs,
  open: openBochs,
};
