// qemu's "vpc" format: Microsoft Virtual PC / Hyper-V VHD images, fixed, dynamic and
// differencing. Like qemu, reads ignore the per-block sector bitmaps (an allocated block is read
// whole) and a differencing disk is read as a dynamic one with no parent: qemu's vpc driver has
// no backing file support, so its parent is reported (parentName, parentLocators) but not opened.
import { certainHoleLength, fileRun } from '../raw/holes.ts';
import type { BlockDevice, Driver, Extent, Image, NodeInfo, OpenContext } from '../types.ts';
import { openingAs, readZeroFilled } from './file-read.ts';
import { readFooter, totalSectors, VHD_FIXED, type Footer } from './footer.ts';
import { readDynamicHeader, type DynamicHeader } from './dynamic-header.ts';
import { loadBat, UNALLOCATED } from './bat.ts';
import { vpcCreate } from './create.ts';
import { vpcWriter } from './writer.ts';

interface Dynamic {
  header: DynamicHeader;
  bat: Uint32Array;
}

export class VpcImage implements Image {
  readonly format = 'vpc';
  readonly virtualSize: number;
  /** qemu decides between raw and block-mapped reads by the footer's type, not its location. */
  private readonly fixedReads: boolean;

  constructor(
    private readonly dev: BlockDevice,
    readonly footer: Footer,
    sectors: bigint,
    private readonly dynamic?: Dynamic,
  ) {
    this.virtualSize = Number(sectors * 512n);
    this.fixedReads = footer.diskType === VHD_FIXED || !dynamic;
  }

  /** Differencing disks: the parent's name as stored in the dynamic header ('' if none). */
  get parentName(): string {
    return this.dynamic?.header.parentName ?? '';
  }

  get parentLocators(): DynamicHeader['parentLocators'] {
    return this.dynamic?.header.parentLocators ?? [];
  }

  info(): NodeInfo {
    const info: NodeInfo = { format: 'vpc', 'dirty-flag': false, 'virtual-size': this.virtualSize };
    // qemu's vpc_get_info reports the block size for any footer type but fixed.
    if (this.footer.diskType !== VHD_FIXED) info['cluster-size'] = this.dynamic?.header.blockSize ?? 0;
    return info;
  }

  /** Host offset of the data at `offset`, or -1 when its block is not allocated. */
  private hostOffset(offset: number): number {
    const d = this.dynamic!;
    const index = Math.floor(offset / d.header.blockSize);
    if (index >= d.bat.length || d.bat[index] === UNALLOCATED) return -1;
    return d.bat[index] * 512 + d.header.bitmapSize + (offset % d.header.blockSize);
  }

  read(buf: Uint8Array, offset: number): void {
    if (this.fixedReads) return readZeroFilled(this.dev, buf, offset);
    const blockSize = this.dynamic!.header.blockSize;
    for (let done = 0; done < buf.length; ) {
      const pos = offset + done;
      const n = Math.min(buf.length - done, blockSize - (pos % blockSize));
      const part = buf.subarray(done, done + n);
      const host = this.hostOffset(pos);
      if (host < 0) part.fill(0);
      else readZeroFilled(this.dev, part, host);
      done += n;
    }
  }

  /** Unallocated blocks, and blocks or a fixed disk's bytes over holes in the file (a copy need not read them). */
  zeroRun(offset: number, length: number): number {
    length = Math.min(length, this.virtualSize - offset);
    if (this.fixedReads) return certainHoleLength(this.dev, offset, length);
    const blockSize = this.dynamic!.header.blockSize;
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const n = Math.min(length - done, blockSize - (pos % blockSize));
      const host = this.hostOffset(pos);
      const zeros = host < 0 ? n : certainHoleLength(this.dev, host, n);
      done += zeros;
      if (zeros < n) break;
    }
    return done;
  }

  /** As qemu's vpc_co_block_status: one allocated block at a time, unallocated runs merged. */
  extent(offset: number, length: number): Extent {
    length = Math.min(length, this.virtualSize - offset);
    if (this.fixedReads) {
      // qemu asks the file system too: a hole in a fixed VHD is data that reads as zeros.
      const run = fileRun(this.dev, offset, length);
      return { offset, length: run.length, kind: 'data', depth: 0, hostOffset: offset, zeroData: run.hole || undefined };
    }
    const blockSize = this.dynamic!.header.blockSize;
    const first = this.hostOffset(offset);
    const toBlockEnd = Math.min(length, blockSize - (offset % blockSize));
    if (first >= 0) return { offset, length: toBlockEnd, kind: 'data', depth: 0, hostOffset: first };
    let covered = toBlockEnd;
    const bat = this.dynamic!.bat;
    while (covered < length) {
      const index = (offset + covered) / blockSize;
      // Past the loaded table every block is unallocated: no need to walk them one by one.
      if (index >= bat.length) covered = length;
      else if (bat[index] === UNALLOCATED) covered += Math.min(length - covered, blockSize);
      else break;
    }
    return { offset, length: covered, kind: 'zero', depth: 0 };
  }
}

export function openVpc(dev: BlockDevice, ctx: OpenContext): VpcImage {
  return openingAs(ctx.displayName, () => openDynamicOrFixed(dev, ctx));
}

function openDynamicOrFixed(dev: BlockDevice, ctx: OpenContext): VpcImage {
  const footer = readFooter(dev);
  const sectors = totalSectors(footer, ctx.profile?.vhdCurrentSize ?? true);
  if (!footer.atStart) return new VpcImage(dev, footer, sectors);
  const header = readDynamicHeader(dev, footer.dataOffset, sectors);
  const blocksNeeded = Math.ceil(Number(sectors * 512n) / header.blockSize);
  const bat = loadBat(dev, header, blocksNeeded);
  return new VpcImage(dev, footer, sectors, { header, bat });
}

const CONECTIX = 'conectix';

export const vpcDriver: Driver = {
  name: 'vpc',
  // qemu looks for the cookie at offset 0 only, so fixed VHDs are not detected (they probe raw).
  probe: (head) => (head.length >= 8 && String.fromCharCode(...head.subarray(0, 8)) === CONECTIX ? 100 : 0),
  open: openVpc,
  create: vpcCreate,
  writer: vpcWriter,
};
