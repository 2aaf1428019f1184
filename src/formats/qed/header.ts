// The QED header: qemu's bdrv_qed_do_open checks, in its order and wording.
import { ImageError, type BlockDevice } from '../types.ts';
import { cString, readAt } from '../bytes.ts';
import { BDRV_MAX_LENGTH } from '../vpc/file-read.ts';

export const QED_MAGIC = 0x00444551; // "QED\0"
export const F_BACKING_FILE = 1n;
export const F_NEED_CHECK = 2n;
export const F_BACKING_FORMAT_NO_PROBE = 4n;
const FEATURE_MASK = F_BACKING_FILE | F_NEED_CHECK | F_BACKING_FORMAT_NO_PROBE;
const HEADER_SIZE = 64;
/** qemu's backing file name buffer (BlockDriverState.backing_file, PATH_MAX bytes). */
const BACKING_NAME_BUF = 4096;
const U32_MAX = 2 ** 32 - 1;
const U64_MASK = (1n << 64n) - 1n;

export interface QedHeader {
  clusterSize: number;
  tableSize: number;
  headerSize: number;
  features: bigint;
  l1Offset: bigint;
  imageSize: bigint;
  /** The file size rounded down to whole clusters (qemu's s->file_size). */
  fileSize: bigint;
  backingFile?: string;
  backingFormat?: string;
}

const isPowerOfTwo = (v: number): boolean => v > 0 && (v & (v - 1)) === 0;

/** qemu's qed_check_cluster_offset: aligned, after the header, before the end of the file. */
export function validClusterOffset(h: QedHeader, offset: bigint): boolean {
  const cs = BigInt(h.clusterSize);
  if (offset % cs !== 0n) return false;
  return offset >= BigInt(h.headerSize) * cs && offset < h.fileSize;
}

/** qemu's qed_check_table_offset (its 64-bit wrap included). */
export function validTableOffset(h: QedHeader, offset: bigint): boolean {
  const end = (offset + BigInt(h.tableSize - 1) * BigInt(h.clusterSize)) & U64_MASK;
  if (end <= offset) return false;
  return validClusterOffset(h, offset) && validClusterOffset(h, end);
}

/** Entries in one table (L1 or L2). */
export function tableEntries(h: QedHeader): number {
  return (h.clusterSize * h.tableSize) / 8;
}

export function readQedHeader(dev: BlockDevice): QedHeader {
  const b = readAt(dev, 0, HEADER_SIZE);
  const clusterSize = b.readUInt32LE(4);
  const tableSize = b.readUInt32LE(8);
  const headerSize = b.readUInt32LE(12);
  const features = b.readBigUInt64LE(16);
  const l1Offset = b.readBigUInt64LE(40);
  const imageSize = b.readBigUInt64LE(48);
  const backingOffset = b.readUInt32LE(56);
  const backingSize = b.readUInt32LE(60);
  if (b.readUInt32LE(0) !== QED_MAGIC) throw new ImageError('Image not in QED format');
  if (features & ~FEATURE_MASK) throw new ImageError(`Unsupported QED features: ${(features & ~FEATURE_MASK).toString(16)}`);
  if (!isPowerOfTwo(clusterSize) || clusterSize < 4096 || clusterSize > 64 * 1024 * 1024) {
    throw new ImageError('QED cluster size is invalid');
  }
  const cs = BigInt(clusterSize);
  const fileSize = (BigInt(dev.size) / cs) * cs;
  if (!isPowerOfTwo(tableSize) || tableSize > 16) throw new ImageError('QED table size is invalid');
  // qemu's qed_max_image_size, computed in 64 bits as qemu does.
  const entries = (BigInt(tableSize) * cs) / 8n;
  const maxSize = (entries * cs * entries) & U64_MASK;
  if (imageSize % 512n !== 0n || imageSize > maxSize) throw new ImageError('QED image size is invalid');
  const h: QedHeader = { clusterSize, tableSize, headerSize, features, l1Offset, imageSize, fileSize };
  if (!validTableOffset(h, l1Offset)) throw new ImageError('QED table offset is invalid');
  if (headerSize > Math.floor(U32_MAX / clusterSize)) throw new ImageError('QED header size is too large');
  if (features & F_BACKING_FILE) {
    if (BigInt(backingOffset) + BigInt(backingSize) > BigInt(clusterSize) * BigInt(headerSize)) {
      throw new ImageError('QED backing filename offset is invalid');
    }
    if (backingSize >= BACKING_NAME_BUF) throw new ImageError('Failed to read backing filename');
    h.backingFile = cString(readAt(dev, backingOffset, backingSize));
    if (features & F_BACKING_FORMAT_NO_PROBE) h.backingFormat = 'raw';
  }
  // After the driver's open, the block layer refuses sizes the 64-bit check above let through.
  if (imageSize > BDRV_MAX_LENGTH) throw new ImageError('Could not refresh total sector count: File too large');
  return h;
}
