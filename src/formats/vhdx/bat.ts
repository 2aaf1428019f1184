// The VHDX block allocation table: 64-bit little-endian entries, the state in the low 3 bits and
// the file offset in whole MiB above bit 20. Every `chunkRatio` payload entries are followed by one
// sector bitmap entry. The table stays in its on-disk bytes, and only the part inside the file
// is read: qemu zero-fills the rest (NOT_PRESENT), so memory stays bounded by the file size.
import { ImageError, type BlockDevice } from '../types.ts';
import { errnoError, beyondMaxLength, qemuFileLength } from '../vpc/file-read.ts';
import type { Region, RegionList } from './headers.ts';
import type { VhdxMetadata } from './metadata.ts';

export const BlockState = {
  NotPresent: 0,
  Undefined: 1,
  Zero: 2,
  Unmapped: 3,
  UnmappedV095: 5,
  FullyPresent: 6,
  PartiallyPresent: 7,
} as const;

const OFFSET_MASK = 0xffff_ffff_fff0_0000n;
const INT64_MAX = 2n ** 63n - 1n;

/** qemu's vhdx_calc_bat_entries, with its uint32 arithmetic (an empty disk still gets entries). */
export function batEntryCount(md: VhdxMetadata): number {
  const bs = BigInt(md.blockSize);
  const dataBlocks = Number(BigInt.asUintN(32, BigInt.asUintN(64, md.virtualDiskSize + bs - 1n) / bs));
  const bits = Math.log2(md.chunkRatio);
  return (dataBlocks + Math.floor(((dataBlocks - 1) >>> 0) / 2 ** bits)) >>> 0;
}

export class Bat {
  private readonly view: DataView;
  /** Entries read from the file; the rest lie past its end and read as zero. */
  private readonly loaded: number;

  private constructor(
    bytes: Uint8Array,
    readonly count: number,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.loaded = bytes.length / 8;
  }

  entry(index: number): bigint {
    return index < this.loaded ? this.view.getBigUint64(index * 8, true) : 0n;
  }

  static load(dev: BlockDevice, region: Region, md: VhdxMetadata, regions: RegionList, totalSectors: bigint, skipCheck = false): Bat {
    const count = batEntryCount(md);
    if (count > Math.floor(region.length / 8)) throw errnoError('EINVAL');
    if (beyondMaxLength(region.fileOffset, region.length)) throw errnoError('EIO');
    const inFile = region.fileOffset < BigInt(dev.size) ? Math.min(count, Math.floor((dev.size - Number(region.fileOffset)) / 8)) : 0;
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(inFile * 8);
    } catch {
      throw errnoError('ENOMEM'); // qemu_try_blockalign failing
    }
    if (inFile > 0) dev.read(bytes, Number(region.fileOffset));
    const bat = new Bat(bytes, count);
    // qemu-img check opens without this check (BDRV_O_CHECK): its checker runs it, counting.
    if (!skipCheck) bat.check(dev, md, regions, totalSectors);
    return bat;
  }

  /**
   * qemu's vhdx_check_bat_entries: present blocks must lie inside the file and its regions. The
   * first problem throws; with `found` (qemu's errcnt, for check) every report line is collected.
   */
  check(dev: BlockDevice, md: VhdxMetadata, regions: RegionList, totalSectors: bigint, found?: string[]): void {
    const fileSize = BigInt(qemuFileLength(dev));
    const bs = BigInt(md.blockSize);
    let payloadLeft = BigInt(md.chunkRatio);
    const fail = (report: string) => {
      const e = errnoError('EINVAL');
      (e as ImageError & { reports?: string[] }).reports = [report];
      if (!found) throw e;
      found.push(report);
    };
    // Entries past the file are zero (NOT_PRESENT), so only the loaded ones need a look.
    for (let i = 0; i < this.loaded; i++) {
      const e = this.entry(i);
      if (Number(e & 7n) !== BlockState.FullyPresent) continue;
      const offset = e & OFFSET_MASK;
      const index = BigInt(i);
      const remaining = BigInt.asUintN(64, totalSectors * 512n - index * bs);
      const blockLength = remaining < bs ? remaining : bs;
      if (offset > INT64_MAX - bs) fail(`VHDX BAT entry ${i} offset overflow.`);
      if (offset >= fileSize) {
        fail(`VHDX BAT entry ${i} start offset ${offset} points after end of file (${fileSize}). Image has probably been truncated.`);
      } else if (offset + blockLength > fileSize) {
        const end = offset + blockLength - 1n;
        fail(`VHDX BAT entry ${i} end offset ${end} points after end of file (${fileSize}). Image has probably been truncated.`);
      }
      // qemu counts payload and bitmap entries among the present ones only; we keep its count.
      if (payloadLeft-- > 0n) {
        try {
          regions.claim(offset, bs, false);
        } catch (e) {
          const reports = (e as { reports?: string[] }).reports;
          if (!found || !reports) throw e;
          found.push(...reports);
        }
      } else {
        payloadLeft = BigInt(md.chunkRatio);
      }
    }
  }
}
