// The VHDX metadata region: a table of items by GUID. qemu requires the five standard items, reads
// the file parameters, the virtual disk size and the sector sizes, and refuses differencing disks.
import type { BlockDevice } from '../types.ts';
import { errnoError, preadQemu } from '../vpc/file-read.ts';
import {
  FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, PAGE83_DATA, PARENT_LOCATOR, PHYSICAL_SECTOR_SIZE, VIRTUAL_DISK_SIZE, guidEqual,
} from './guid.ts';
import type { Region } from './headers.ts';

const TABLE_MAX_SIZE = 64 * 1024;
const MiB = 1024 * 1024;
const MAX_SECTORS_PER_BLOCK = 2 ** 23;
const ITEMS = [FILE_PARAMETERS, VIRTUAL_DISK_SIZE, PAGE83_DATA, LOGICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE, PARENT_LOCATOR];
const REQUIRED_PRESENT = 0b11111;

export interface VhdxMetadata {
  blockSize: number;
  leaveBlocksAllocated: boolean;
  virtualDiskSize: bigint;
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** Payload blocks per sector bitmap block: BAT entries interleave one bitmap entry per chunk. */
  chunkRatio: number;
}

const isPowerOfTwo = (n: number) => n > 0 && Number.isInteger(Math.log2(n));

/** Reads one item's bytes at its offset in the region (zeros past EOF, as qemu). */
function item(dev: BlockDevice, region: Region, offset: number, length: number): DataView {
  const bytes = preadQemu(dev, region.fileOffset + BigInt(offset), length, () => errnoError('EIO'));
  return new DataView(bytes.buffer);
}

export function readMetadata(dev: BlockDevice, region: Region): VhdxMetadata {
  const table = preadQemu(dev, region.fileOffset, TABLE_MAX_SIZE, () => errnoError('EIO'));
  const v = new DataView(table.buffer);
  if (new TextDecoder('latin1').decode(table.subarray(0, 8)) !== 'metadata') throw errnoError('EINVAL');
  const count = v.getUint16(10, true);
  if (count * 32 > TABLE_MAX_SIZE - 32) throw errnoError('EINVAL');
  const offsets: number[] = [];
  let present = 0;
  for (let i = 0; i < count; i++) {
    const at = 32 + 32 * i;
    const kind = ITEMS.findIndex((g) => guidEqual(table.subarray(at, at + 16), g));
    if (kind >= 0) {
      if (present & (1 << kind)) throw errnoError('EINVAL');
      present |= 1 << kind;
      offsets[kind] = v.getUint32(at + 16, true);
    } else if (v.getUint32(at + 24, true) & 4) {
      throw errnoError('ENOTSUP'); // a required item this reader does not understand
    }
  }
  // Exactly the five standard items: a parent locator alone makes qemu refuse as well.
  if (present !== REQUIRED_PRESENT) throw errnoError('ENOTSUP');
  const params = item(dev, region, offsets[0], 8);
  const blockSize = params.getUint32(0, true);
  const flags = params.getUint32(4, true);
  // has_parent without a parent locator (with one, qemu has refused above: no differencing).
  if (flags & 2) throw errnoError('EINVAL');
  const virtualDiskSize = item(dev, region, offsets[1], 8).getBigUint64(0, true);
  const logicalSectorSize = item(dev, region, offsets[3], 4).getUint32(0, true);
  const physicalSectorSize = item(dev, region, offsets[4], 4).getUint32(0, true);
  if (blockSize < MiB || blockSize > 256 * MiB) throw errnoError('EINVAL');
  // qemu reads only 512-byte logical sectors (4096 is valid VHDX, but unsupported there too).
  if (logicalSectorSize !== 512) throw errnoError('ENOTSUP');
  const chunkRatio = (MAX_SECTORS_PER_BLOCK * logicalSectorSize) / blockSize;
  if (!isPowerOfTwo(blockSize / logicalSectorSize) || !isPowerOfTwo(chunkRatio) || !isPowerOfTwo(blockSize)) {
    throw errnoError('EINVAL');
  }
  return { blockSize, leaveBlocksAllocated: !!(flags & 1), virtualDiskSize, logicalSectorSize, physicalSectorSize, chunkRatio };
}
