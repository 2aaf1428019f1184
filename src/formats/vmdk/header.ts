// The binary headers of sparse extents: hosted sparse "KDMV" (VMDK4, with the stream-optimized
// footer) and the old ESX "COWD" (VMDK3). Fields keep their on-disk widths; 64-bit ones are BigInt.
import { ImageError, type BlockDevice } from '../types.ts';
import { outOfRange, readZeroPadded } from './io.ts';

export const VMDK4_MAGIC = 0x4b444d56; // "KDMV"
export const VMDK3_MAGIC = 0x434f5744; // "COWD"
export const FLAG_RGD = 1 << 1;
export const FLAG_ZERO_GRAIN = 1 << 2;
export const FLAG_MARKER = 1 << 17;
export const COMPRESSION_DEFLATE = 1;
const GD_AT_END = (1n << 64n) - 1n;
/** The header after the 4-byte magic, packed: 75 bytes. */
const VMDK4_HEADER_BYTES = 75;
const MARKER_END_OF_STREAM = 0;
const MARKER_FOOTER = 3;

export interface Vmdk4Header {
  version: number;
  flags: number;
  capacity: bigint;
  granularity: bigint;
  descOffset: bigint;
  numGtesPerGt: number;
  rgdOffset: bigint;
  gdOffset: bigint;
  grainOffset: bigint;
  compressAlgorithm: number;
}

export function parseVmdk4Header(b: Uint8Array): Vmdk4Header {
  const dv = new DataView(b.buffer, b.byteOffset, VMDK4_HEADER_BYTES);
  return {
    version: dv.getUint32(0, true),
    flags: dv.getUint32(4, true),
    capacity: dv.getBigUint64(8, true),
    granularity: dv.getBigUint64(16, true),
    descOffset: dv.getBigUint64(24, true),
    numGtesPerGt: dv.getUint32(40, true),
    rgdOffset: dv.getBigUint64(44, true),
    gdOffset: dv.getBigUint64(52, true),
    grainOffset: dv.getBigUint64(60, true),
    compressAlgorithm: dv.getUint16(73, true),
  };
}

export function readVmdk4Header(dev: BlockDevice): Vmdk4Header {
  const b = new Uint8Array(VMDK4_HEADER_BYTES);
  readZeroPadded(dev, b, 4);
  return parseVmdk4Header(b);
}

/**
 * A stream-optimized image writes its grain directory last and says so with gdOffset = ~0; the
 * real header is then the footer, in the second-to-last sector before the end-of-stream marker.
 * It is read once: a footer that again says "at end" cannot send us round a loop.
 */
export function footerHeaderIfAtEnd(dev: BlockDevice, header: Vmdk4Header): Vmdk4Header {
  if (header.gdOffset !== GD_AT_END) return header;
  const fileBytes = BigInt(Math.ceil(dev.size / 512) * 512);
  const pos = fileBytes - 1536n;
  if (outOfRange(pos, 1536)) throw new ImageError('Failed to read footer: Input/output error', 'EIO');
  const f = new Uint8Array(1536);
  readZeroPadded(dev, f, pos);
  const dv = new DataView(f.buffer);
  const ok =
    dv.getUint32(512, false) === VMDK4_MAGIC &&
    dv.getUint32(8, true) === 0 &&
    dv.getUint32(12, true) === MARKER_FOOTER &&
    dv.getBigUint64(1024, true) === 0n &&
    dv.getUint32(1032, true) === 0 &&
    dv.getUint32(1036, true) === MARKER_END_OF_STREAM;
  if (!ok) throw new ImageError('Invalid footer');
  return parseVmdk4Header(f.subarray(516));
}

export interface Vmdk3Header {
  diskSectors: number;
  granularity: number;
  l1dirOffset: number;
  l1dirSize: number;
}

export function readVmdk3Header(dev: BlockDevice): Vmdk3Header {
  const b = new Uint8Array(40);
  readZeroPadded(dev, b, 4);
  const dv = new DataView(b.buffer);
  return { diskSectors: dv.getUint32(8, true), granularity: dv.getUint32(12, true), l1dirOffset: dv.getUint32(16, true), l1dirSize: dv.getUint32(20, true) };
}
