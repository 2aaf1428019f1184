// The dynamic disk header ("cxsparse", 1024 big-endian bytes at the footer's data offset) and the
// checks qemu's vpc_open makes on it, in qemu's order so that the first failure is qemu's.
import { ImageError, type BlockDevice } from '../types.ts';
import { preadQemu } from './file-read.ts';

const HEADER_SIZE = 1024;
const INT32_MAX = 0x7fff_ffff;

export interface DynamicHeader {
  tableOffset: bigint;
  /** As qemu holds it: a signed 32-bit int. */
  maxTableEntries: number;
  blockSize: number;
  /** Bytes of sector bitmap before each block's data, rounded to whole sectors. */
  bitmapSize: number;
  /** Differencing disks only: the parent's name and its locators' platform codes and offsets. */
  parentName: string;
  parentLocators: { platform: string; dataLength: number; dataOffset: bigint }[];
}

function decodeUtf16(bytes: Uint8Array, bigEndian: boolean): string {
  let s = '';
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    const unit = bigEndian ? (bytes[i] << 8) | bytes[i + 1] : bytes[i] | (bytes[i + 1] << 8);
    if (unit === 0) break;
    s += String.fromCharCode(unit);
  }
  return s;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Reads and validates the dynamic header for a disk of `totalSectors` 512-byte sectors. */
export function readDynamicHeader(dev: BlockDevice, dataOffset: bigint, totalSectors: bigint): DynamicHeader {
  const b = preadQemu(dev, dataOffset, HEADER_SIZE, () => new ImageError('Error reading dynamic VHD header'));
  if (new TextDecoder('latin1').decode(b.subarray(0, 8)) !== 'cxsparse') throw new ImageError('Invalid header magic');
  const view = new DataView(b.buffer);
  const blockSize = view.getUint32(32);
  if (!isPowerOfTwo(blockSize >>> 0) || blockSize < 512) throw new ImageError(`Invalid block size ${blockSize}`);
  const bs = BigInt(blockSize);
  const maxTableEntries = view.getInt32(28);
  const diskBytes = totalSectors * 512n;
  if (diskBytes / bs > 0xffff_ffffn) throw new ImageError('Too many blocks');
  // qemu multiplies in uint64 after sign-extending the int, wrapping modulo 2^64.
  const tableCovers = BigInt.asUintN(64, BigInt.asUintN(64, BigInt(maxTableEntries)) * bs);
  if (tableCovers < diskBytes) throw new ImageError('Page table too small');
  if (maxTableEntries < 0 || maxTableEntries > Math.floor(INT32_MAX / 4)) {
    throw new ImageError(`Max Table Entries too large (${maxTableEntries})`);
  }
  const parentLocators = [];
  for (let i = 0; i < 8; i++) {
    const at = 576 + 24 * i;
    const platform = view.getUint32(at);
    if (platform === 0) continue;
    parentLocators.push({
      platform: new TextDecoder('latin1').decode(b.subarray(at, at + 4)),
      dataLength: view.getUint32(at + 8),
      dataOffset: view.getBigUint64(at + 16),
    });
  }
  return {
    tableOffset: view.getBigUint64(16),
    maxTableEntries,
    blockSize,
    bitmapSize: (Math.floor(blockSize / (8 * 512)) + 511) & ~511,
    parentName: decodeUtf16(b.subarray(64, 576), true),
    parentLocators,
  };
}
