// qemu's "parallels" format: Parallels/Virtuozzo expanding disks ("WithoutFreeSpace" and the
// newer "WithouFreSpacExt"), read as qemu's block/parallels.c reads them when opened read-only
// (no repair: qemu repairs only images it opens read-write).
import { ImageError, type BlockDevice, type Driver, type Extent, type Image, type NodeInfo, type OpenContext, type SizeQueryFailure } from '../types.ts';
import { readAt, requestOk, roundUp } from '../bytes.ts';
import { probes } from '../probe-only.ts';
import { openingAs } from '../vpc/file-read.ts';
import { sizeFromSectorCount, sizeFailureError, virtualSizeOf } from '../sector-count.ts';
import { PagedTable } from '../qcow/paged-table.ts';
import { parallelsCreate } from './create.ts';
import { parallelsWriter } from './writer.ts';

const MAGIC = 'WithoutFreeSpace';
const MAGIC2 = 'WithouFreSpacExt';
const HEADER_SIZE = 64;
const SECTOR = 512;
const INT32_MAX = 2 ** 31 - 1;
/** qemu's BDRV_REQUEST_MAX_BYTES. */
const REQUEST_MAX_BYTES = 0x7ffffe00;

export interface ParallelsHeader {
  /** Sectors per cluster ("tracks"). */
  tracks: number;
  /** BAT entries count in these units of sectors (1 for the old magic, `tracks` for the new). */
  offMultiplier: number;
  batEntries: number;
  sectors: bigint;
  extOffset: bigint;
}

export function parseParallelsHeader(h: Buffer): ParallelsHeader {
  const magic = h.toString('latin1', 0, 16);
  const version = h.readUInt32LE(16);
  const tracks = h.readUInt32LE(28);
  const batEntries = h.readUInt32LE(32);
  let sectors = h.readBigUInt64LE(36);
  const extOffset = h.readBigUInt64LE(56);
  if (version !== 2 || (magic !== MAGIC && magic !== MAGIC2)) throw new ImageError('Image not in Parallels format');
  // The old format has a 32-bit sector count.
  if (magic === MAGIC) sectors &= 0xffffffffn;
  if (tracks === 0) throw new ImageError('Invalid image: Zero sectors per track');
  if (tracks > Math.floor(INT32_MAX / 513)) throw new ImageError('Invalid image: Too big cluster');
  if (batEntries > Math.floor(INT32_MAX / 4)) throw new ImageError('Catalog too large');
  if (extOffset >= (1n << 63n) / 512n) throw new ImageError('Invalid image: Too big offset');
  return { tracks, offMultiplier: magic === MAGIC ? 1 : tracks, batEntries, sectors, extOffset };
}

export class ParallelsImage implements Image {
  readonly format = 'parallels';
  readonly virtualSize: number;
  readonly sizeFailure?: SizeQueryFailure;
  /** qemu's parallels block_status takes its length as an int of sectors. */
  readonly blockStatusIntSectors = true;
  /** qemu 8.2 marked the driver as supporting persistent bitmaps (CBT); instar loads none of them. */
  readonly persistentBitmaps = [];
  readonly persistentBitmapsSince = { major: 8, minor: 2 };
  private readonly clusterSize: number;

  constructor(
    private readonly dev: BlockDevice,
    readonly header: ParallelsHeader,
    private readonly bat: PagedTable,
    /** The size as qemu's open leaves it, and how its size queries fail (sector-count.ts). */
    size: { virtualSize: number; sizeFailure?: SizeQueryFailure },
  ) {
    this.virtualSize = size.virtualSize;
    this.sizeFailure = size.sizeFailure;
    this.clusterSize = header.tracks * SECTOR;
  }

  info(): NodeInfo {
    // qemu's parallels driver has no get_info: no cluster size and no dirty flag.
    return { format: 'parallels', 'virtual-size': this.virtualSize };
  }

  /** qemu's seek_to_sector, in bytes: the host offset of guest byte `offset`, or -1n. */
  private hostOffset(offset: number): bigint {
    const index = Math.floor(offset / this.clusterSize);
    if (index >= this.bat.count) return -1n;
    const entry = this.bat.u32(index);
    if (entry === 0) return -1n;
    return (BigInt(entry) * BigInt(this.header.offMultiplier) * BigInt(SECTOR)) + BigInt(offset % this.clusterSize);
  }

  read(buf: Uint8Array, offset: number): void {
    if (this.sizeFailure) throw sizeFailureError(this.sizeFailure);
    for (let done = 0; done < buf.length; ) {
      const pos = offset + done;
      const n = Math.min(buf.length - done, this.clusterSize - (pos % this.clusterSize));
      const part = buf.subarray(done, done + n);
      const host = pos < this.virtualSize ? this.hostOffset(pos) : -1n;
      if (host < 0n) part.fill(0);
      else {
        if (!requestOk(host, BigInt(n))) throw new ImageError('Input/output error', 'EIO');
        part.set(readAt(this.dev, host, n)); // past the end of the file reads as zeros, as in qemu
      }
      done += n;
    }
  }

  /** As parallels' block_status: clusters merged while their host offsets run on. */
  extent(offset: number, length: number): Extent {
    if (this.sizeFailure) throw sizeFailureError(this.sizeFailure);
    length = Math.min(length, this.virtualSize - offset);
    const first = this.hostOffset(offset);
    let covered = Math.min(length, this.clusterSize - (offset % this.clusterSize));
    // Bounded scan: at most one page of the BAT per call.
    const end = this.bat.pageEnd(Math.min(this.bat.count - 1, Math.floor(offset / this.clusterSize)));
    while (covered < length && Math.floor((offset + covered) / this.clusterSize) < end) {
      const next = this.hostOffset(offset + covered);
      if (first < 0n ? next >= 0n : next !== first + BigInt(covered)) break;
      covered += Math.min(length - covered, this.clusterSize);
    }
    if (first < 0n) {
      // Past the BAT everything is unallocated: no need to walk it cluster by cluster.
      if (Math.floor(offset / this.clusterSize) >= this.bat.count) covered = length;
      return { offset, length: covered, kind: 'unallocated', depth: 0 };
    }
    return { offset, length: covered, kind: 'data', depth: 0, hostOffset: Number(first) };
  }
}

const EXTENSION_MAGIC = 0xab234cef23dcea87n;

/**
 * A format extension (dirty bitmaps) is read by qemu when the image is opened read-only. instar
 * checks its magic as qemu does and refuses a valid one (it does not read the bitmaps).
 */
function checkFormatExtension(dev: BlockDevice, at: bigint): void {
  if (!requestOk(at, 8n)) throw new ImageError('Input/output error', 'EIO');
  const magic = readAt(dev, at, 8).readBigUInt64LE(0);
  if (magic !== EXTENSION_MAGIC) {
    throw new ImageError(`Wrong parallels Format Extension magic: 0x${magic.toString(16)}, expected: 0x${EXTENSION_MAGIC.toString(16)}`);
  }
  throw new ImageError('Parallels format extensions are not supported by instar');
}

export function openParallels(dev: BlockDevice, ctx: OpenContext): ParallelsImage {
  return openingAs(ctx.displayName, () => {
    const header = parseParallelsHeader(readAt(dev, 0, HEADER_SIZE));
    // qemu reads the header and BAT in one request, rounded up to the memory alignment (4 KiB).
    const headerBytes = roundUp(HEADER_SIZE + 4 * header.batEntries, 4096);
    if (headerBytes > REQUEST_MAX_BYTES) throw new ImageError('Input/output error', 'EIO');
    if (header.extOffset !== 0n) checkFormatExtension(dev, header.extOffset * BigInt(SECTOR));
    // The header's 64-bit sector count is qemu's total_sectors as is: a byte size that wraps
    // opens, and then fails each size query (sector-count.ts).
    const sized = sizeFromSectorCount(header.sectors);
    const size = { virtualSize: virtualSizeOf(sized), sizeFailure: sized.sizeFailure };
    return new ParallelsImage(dev, header, new PagedTable(dev, BigInt(HEADER_SIZE), header.batEntries, 'u32le'), size);
  });
}

export const parallelsDriver: Driver = {
  name: 'parallels',
  probe: probes.parallels,
  open: openParallels,
  create: parallelsCreate,
  writer: parallelsWriter,
};
