// qemu's "vhdx" format: Hyper-V VHDX images, dynamic and fixed (qemu opens no differencing VHDX).
// Reads follow the BAT block by block; qemu has no block-status for VHDX, so every extent is data.
import { ImageError, type BlockDevice, type Driver, type Extent, type Image, type NodeInfo, type OpenContext } from '../types.ts';
import { certainHoleLength } from '../raw/holes.ts';
import { BDRV_MAX_LENGTH, errnoError, openingAs, readZeroFilled } from '../vpc/file-read.ts';
import { Bat, BlockState } from './bat.ts';
import { checkSignature, readHeaders, readRegionTable, RegionList } from './headers.ts';
import { checkLog } from './log.ts';
import { planLogReplay } from './log-replay.ts';
import { applyRepair } from '../repair.ts';
import { readMetadata, type VhdxMetadata } from './metadata.ts';
import { vhdxCreate } from './create.ts';
import { vhdxWriter } from './writer.ts';

const OFFSET_MASK = 0xffff_ffff_fff0_0000n;
/** Block states read() answers with zeros, reading nothing. */
const READS_AS_ZERO = new Set<number>([BlockState.NotPresent, BlockState.Undefined, BlockState.Zero, BlockState.Unmapped, BlockState.UnmappedV095]);

export class VhdxImage implements Image {
  readonly format = 'vhdx';
  /** qemu's vhdx driver has no block status: the generic layer calls it all data, unmapped. */
  readonly blockStatus = 'none';
  readonly virtualSize: number;
  /** The open replayed a log (a writable open of a dirty image): qemu's check counts it as a fixed corruption. */
  logReplayed = false;
  /** After a replay: the sequence number of qemu's next log entry (formats/vhdx/inplace.ts). */
  nextLogSequence?: bigint;

  constructor(
    private readonly dev: BlockDevice,
    readonly metadata: VhdxMetadata,
    private readonly bat: Bat,
    totalSectors: bigint,
  ) {
    this.virtualSize = Number(totalSectors * 512n);
  }

  info(): NodeInfo {
    return { format: 'vhdx', 'dirty-flag': false, 'virtual-size': this.virtualSize, 'cluster-size': this.metadata.blockSize };
  }

  /** The BAT index of payload block `block`: a sector bitmap entry follows every chunk. */
  private entryIndex(block: number): number {
    return block + Math.floor(block / this.metadata.chunkRatio);
  }

  read(buf: Uint8Array, offset: number): void {
    const blockSize = this.metadata.blockSize;
    for (let done = 0; done < buf.length; ) {
      const pos = offset + done;
      const block = Math.floor(pos / blockSize);
      const inBlock = pos - block * blockSize;
      const n = Math.min(buf.length - done, blockSize - inBlock);
      const part = buf.subarray(done, done + n);
      const entry = this.bat.entry(this.entryIndex(block));
      switch (Number(entry & 7n)) {
        case BlockState.NotPresent:
        case BlockState.Undefined:
        case BlockState.Zero:
        case BlockState.Unmapped:
        case BlockState.UnmappedV095:
          part.fill(0);
          break;
        case BlockState.FullyPresent: {
          const fileOffset = Number(entry & OFFSET_MASK);
          // qemu adds the offset within the block only to a non-zero block offset.
          readZeroFilled(this.dev, part, fileOffset === 0 ? 0 : fileOffset + inBlock);
          break;
        }
        default:
          // PARTIALLY_PRESENT needs a parent, which qemu does not support; other states are invalid.
          throw errnoError('EIO');
      }
      done += n;
    }
  }

  /** Blocks without data, and present blocks over holes in the file (a copy need not read them). */
  zeroRun(offset: number, length: number): number {
    const blockSize = this.metadata.blockSize;
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const block = Math.floor(pos / blockSize);
      const inBlock = pos - block * blockSize;
      const n = Math.min(length - done, blockSize - inBlock);
      const entry = this.bat.entry(this.entryIndex(block));
      const state = Number(entry & 7n);
      if (state === BlockState.FullyPresent) {
        const fileOffset = Number(entry & OFFSET_MASK);
        // As read(): the offset within the block is added only to a non-zero block offset.
        const hole = certainHoleLength(this.dev, fileOffset === 0 ? 0 : fileOffset + inBlock, n);
        done += hole;
        if (hole < n) break;
      } else if (READS_AS_ZERO.has(state)) {
        done += n;
      } else {
        break; // read() fails on these: let it
      }
    }
    return done;
  }

  extent(offset: number, length: number): Extent {
    return { offset, length: Math.min(length, this.virtualSize - offset), kind: 'data', depth: 0 };
  }
}

export function openVhdx(dev: BlockDevice, ctx: OpenContext): VhdxImage {
  return openingAs(ctx.displayName, () => openChecked(dev, ctx));
}

function openChecked(dev: BlockDevice, ctx: OpenContext): VhdxImage {
  checkSignature(dev);
  const headers = readHeaders(dev);
  const header = headers.header;
  const regions = new RegionList();
  regions.add(header.logOffset, BigInt(header.logLength));
  // A log to replay comes back only for a writable open; qemu replays it before reading on.
  const sequence = checkLog(dev, header, ctx);
  if (sequence) {
    // qemu replays first and then fails on overlapping regions; instar fails the same way before
    // writing anything (its replays never touch the header section the region table is in).
    const logOnly = new RegionList();
    logOnly.add(header.logOffset, BigInt(header.logLength));
    readRegionTable(dev, logOnly);
    applyRepair(dev, planLogReplay(dev, headers, sequence));
  }
  const { bat: batRegion, metadata: metadataRegion } = readRegionTable(dev, regions);
  const metadata = readMetadata(dev, metadataRegion);
  const totalSectors = metadata.virtualDiskSize / 512n;
  const bat = Bat.load(dev, batRegion, metadata, regions, totalSectors, ctx.check);
  // The block layer's own limit, checked when qemu's open returns.
  if (totalSectors * 512n > BDRV_MAX_LENGTH) throw new ImageError('Could not refresh total sector count: File too large');
  if (totalSectors * 512n > BigInt(Number.MAX_SAFE_INTEGER)) {
    // qemu opens these (up to 8 EiB); sizes are JS numbers here, so we refuse rather than round.
    throw new ImageError(`VHDX virtual disk size ${metadata.virtualDiskSize} is too large for instar`);
  }
  const image = new VhdxImage(dev, metadata, bat, totalSectors);
  image.logReplayed = sequence !== undefined;
  image.nextLogSequence = sequence?.next;
  return image;
}

export const vhdxDriver: Driver = {
  name: 'vhdx',
  probe: (head) => (head.length >= 8 && String.fromCharCode(...head.subarray(0, 8)) === 'vhdxfile' ? 100 : 0),
  open: openVhdx,
  create: vhdxCreate,
  writer: vhdxWriter,
};
