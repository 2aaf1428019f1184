// Opening a file that starts with a sparse magic, with qemu's checks in qemu's order.
import { ImageError, type BlockDevice } from '../types.ts';
import { cString } from './cstring.ts';
import { MAX_DESCRIPTOR_BYTES } from './descriptor.ts';
import { COMPRESSION_DEFLATE, FLAG_MARKER, FLAG_RGD, FLAG_ZERO_GRAIN, VMDK3_MAGIC, VMDK4_MAGIC, footerHeaderIfAtEnd, readVmdk3Header, readVmdk4Header } from './header.ts';
import { outOfRange, readZeroPadded, toInt64 } from './io.ts';
import { SparseExtent, sectorsToBytes } from './sparse-extent.ts';

export type SparseOpen = { extent: SparseExtent; compressed: boolean } | { descriptor: string };

/**
 * The first bytes of a file (what qemu calls reading the descriptor): at most 1 MiB - 1. qemu
 * sees file sizes rounded up to whole sectors, so only an empty file is "too small".
 */
export function readHead(dev: BlockDevice, pos: bigint = 0n): Uint8Array {
  const size = Math.ceil(dev.size / 512) * 512;
  if (size < 4) throw new ImageError('File is too small, not a valid image');
  const buf = new Uint8Array(Math.min(size, MAX_DESCRIPTOR_BYTES));
  if (outOfRange(pos, buf.length)) throw new ImageError('Could not read from file: Input/output error', 'EIO');
  readZeroPadded(dev, buf, pos);
  return buf;
}

export function magicOf(head: Uint8Array): number {
  return new DataView(head.buffer, head.byteOffset, 4).getUint32(0, false);
}

/**
 * Opens a sparse extent file whose first bytes are `head`. A hosted sparse header with no
 * capacity and a descriptor offset is a descriptor in disguise: its text is returned instead.
 */
export function openSparse(dev: BlockDevice, head: Uint8Array, label: string, writable: boolean): SparseOpen {
  const magic = magicOf(head);
  if (magic === VMDK3_MAGIC) return { extent: openVmdk3(dev, label), compressed: false };
  if (magic !== VMDK4_MAGIC) throw new ImageError('Image not in VMDK format');
  let h = readVmdk4Header(dev);
  if (h.capacity === 0n && h.descOffset !== 0n) {
    return { descriptor: cString(readHead(dev, toInt64(h.descOffset << 9n))) };
  }
  h = footerHeaderIfAtEnd(dev, h);
  const compressed = h.compressAlgorithm === COMPRESSION_DEFLATE;
  if (h.version > 3) throw new ImageError(`Unsupported VMDK version ${h.version}`);
  if (h.version === 3 && writable && !compressed) throw new ImageError('VMDK version 3 must be read only');
  if (h.numGtesPerGt > 512) throw new ImageError('L2 table size too big');
  const l1EntrySectors = (BigInt(h.numGtesPerGt) * h.granularity) & 0xffffffffn;
  if (l1EntrySectors === 0n) throw new ImageError('L1 entry size is invalid');
  const l1Size = Number((((h.capacity + l1EntrySectors - 1n) & ((1n << 64n) - 1n)) / l1EntrySectors) & 0xffffffffn);
  const fileSectors = BigInt(Math.ceil(dev.size / 512));
  if (fileSectors < h.grainOffset) {
    throw new ImageError(`File truncated, expecting at least ${toInt64(h.grainOffset * 512n)} bytes`);
  }
  const extent = new SparseExtent(dev, label, {
    sectors: toInt64(h.capacity),
    l1Offset: sectorsToBytes(h.gdOffset),
    l1BackupOffset: h.flags & FLAG_RGD ? sectorsToBytes(h.rgdOffset) : 0n,
    l1Size,
    l2Size: h.numGtesPerGt,
    clusterSectors: h.granularity,
    compressed,
    hasMarker: (h.flags & FLAG_MARKER) !== 0,
    hasZeroGrain: (h.flags & FLAG_ZERO_GRAIN) !== 0,
  });
  return { extent, compressed };
}

function openVmdk3(dev: BlockDevice, label: string): SparseExtent {
  const h = readVmdk3Header(dev);
  return new SparseExtent(dev, label, {
    sectors: BigInt(h.diskSectors),
    l1Offset: BigInt(h.l1dirOffset) * 512n,
    l1BackupOffset: 0n,
    l1Size: h.l1dirSize,
    l2Size: 4096,
    clusterSectors: BigInt(h.granularity),
    compressed: false,
    hasMarker: false,
    hasZeroGrain: false,
  });
}
