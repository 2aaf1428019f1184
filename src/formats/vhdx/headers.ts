// The VHDX header section: the file identifier, two 4 KiB headers (the valid one with the higher
// sequence number is current) and the region table. qemu reads only the first region table copy.
import { ImageError, type BlockDevice } from '../types.ts';
import { errnoError, preadQemu } from '../vpc/file-read.ts';
import { checksumValid } from './crc32c.ts';
import { BAT_REGION, METADATA_REGION, guidEqual } from './guid.ts';

const KiB = 1024;
export const HEADER_OFFSETS = [64 * KiB, 128 * KiB];
export const HEADER_SIZE = 4 * KiB;
const REGION_TABLE_OFFSET = 192 * KiB;
const REGION_TABLE_SIZE = 64 * KiB;

export interface VhdxHeader {
  sequence: bigint;
  logGuid: Uint8Array;
  logVersion: number;
  logLength: number;
  logOffset: bigint;
}

export interface Region {
  fileOffset: bigint;
  length: number;
}

/** Regions of the file already claimed, for qemu's overlap checks (vhdx_region_check). */
export class RegionList {
  private regions: { start: bigint; end: bigint }[] = [];

  /** Throws qemu's EINVAL, with its report line, when [start, start+length) meets a region. */
  claim(start: bigint, length: bigint, register = true): void {
    const end = BigInt.asUintN(64, start + length);
    // qemu keeps the list newest first and reports the first overlap it meets.
    const hit = [...this.regions].reverse().find((r) => !(start >= r.end || end <= r.start));
    if (hit) {
      const e = errnoError('EINVAL') as ImageError & { reports?: string[] };
      e.reports = [`VHDX region ${start}-${end} overlaps with region ${hit.start}-${hit.end}`];
      throw e;
    }
    if (register) this.add(start, length);
  }

  add(start: bigint, length: bigint): void {
    this.regions.push({ start, end: BigInt.asUintN(64, start + length) });
  }
}

export function checkSignature(dev: BlockDevice): void {
  const sig = preadQemu(dev, 0n, 8, () => errnoError('EIO'));
  if (new TextDecoder('latin1').decode(sig) !== 'vhdxfile') throw errnoError('EINVAL');
}

function readHeader(dev: BlockDevice, offset: number): { raw: Uint8Array; header?: VhdxHeader } {
  const raw = preadQemu(dev, BigInt(offset), HEADER_SIZE, () => errnoError('EIO'));
  if (!checksumValid(raw, 4)) return { raw };
  const v = new DataView(raw.buffer);
  if (v.getUint32(0, true) !== 0x64616568 /* "head" */ || v.getUint16(66, true) !== 1) return { raw };
  return {
    raw,
    header: {
      sequence: v.getBigUint64(8, true),
      logGuid: raw.slice(48, 64),
      logVersion: v.getUint16(64, true),
      logLength: v.getUint32(68, true),
      logOffset: v.getBigUint64(72, true),
    },
  };
}

/** Both 4 KiB header sectors as read, and which one is current (qemu's curr_header). */
export interface HeaderPair {
  raws: [Uint8Array, Uint8Array];
  current: 0 | 1;
  header: VhdxHeader;
}

/** The current header, as qemu's vhdx_parse_header picks it, with both headers' bytes. */
export function readHeaders(dev: BlockDevice): HeaderPair {
  const [h1, h2] = HEADER_OFFSETS.map((at) => readHeader(dev, at));
  const raws: [Uint8Array, Uint8Array] = [h1.raw, h2.raw];
  const pick = (current: 0 | 1): HeaderPair => ({ raws, current, header: (current === 0 ? h1.header : h2.header)! });
  const none = () => new ImageError('No valid VHDX header found');
  if (h1.header && !h2.header) return pick(0);
  if (!h1.header && h2.header) return pick(1);
  if (!h1.header || !h2.header) throw none();
  if (h1.header.sequence > h2.header.sequence) return pick(0);
  if (h2.header.sequence > h1.header.sequence) return pick(1);
  // Disk2VHD writes two identical headers; equal sequence numbers are fine only then.
  if (h1.raw.every((b, i) => b === h2.raw[i])) return pick(0);
  throw none();
}

/** The current header, as qemu's vhdx_parse_header picks it. */
export function readCurrentHeader(dev: BlockDevice): VhdxHeader {
  return readHeaders(dev).header;
}

/** The BAT and metadata regions from the first region table, with qemu's checks. */
export function readRegionTable(dev: BlockDevice, regions: RegionList): { bat: Region; metadata: Region } {
  const buf = preadQemu(dev, BigInt(REGION_TABLE_OFFSET), REGION_TABLE_SIZE, () => errnoError('EIO'));
  if (!checksumValid(buf, 4)) throw errnoError('EINVAL');
  const v = new DataView(buf.buffer);
  if (v.getUint32(0, true) !== 0x69676572 /* "regi" */) throw errnoError('EINVAL');
  const count = v.getUint32(8, true);
  if (count > 2047) throw errnoError('EINVAL');
  let bat: Region | undefined;
  let metadata: Region | undefined;
  for (let i = 0; i < count; i++) {
    const at = 16 + 32 * i;
    const entry = { fileOffset: v.getBigUint64(at + 16, true), length: v.getUint32(at + 24, true) };
    regions.claim(entry.fileOffset, BigInt(entry.length));
    const id = buf.subarray(at, at + 16);
    if (guidEqual(id, BAT_REGION)) {
      if (bat) throw errnoError('EINVAL');
      bat = entry;
    } else if (guidEqual(id, METADATA_REGION)) {
      if (metadata) throw errnoError('EINVAL');
      metadata = entry;
    } else if (v.getUint32(at + 28, true) & 1) {
      // A required region this reader does not know: the specification says refuse.
      throw errnoError('ENOTSUP');
    }
  }
  if (!bat || !metadata) throw errnoError('EINVAL');
  return { bat, metadata };
}
