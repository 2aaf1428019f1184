// Byte-level edits of VHDX images for hostile tests: fields are patched in place and every
// checksummed structure touched gets its CRC-32C recomputed, so that only the intended fault stays.
import { crc32c } from '../../../src/formats/vhdx/crc32c.ts';
import { BAT_REGION, METADATA_REGION, guidEqual } from '../../../src/formats/vhdx/guid.ts';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const HEADERS = [64 * KiB, 128 * KiB];
export const REGION_TABLES = [192 * KiB, 256 * KiB];

export function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export function fixCrc(b: Uint8Array, at: number, size: number, field = 4): void {
  const v = view(b);
  v.setUint32(at + field, 0, true);
  v.setUint32(at + field, crc32c(b.subarray(at, at + size)), true);
}

/** Edits both headers (fields at their offsets within a header) and fixes their checksums. */
export function patchHeaders(b: Uint8Array, edit: (v: DataView, at: number) => void, which = [0, 1]): void {
  for (const i of which) {
    edit(view(b), HEADERS[i]);
    fixCrc(b, HEADERS[i], 4 * KiB);
  }
}

export function patchRegionTable(b: Uint8Array, edit: (v: DataView, at: number) => void): void {
  for (const at of REGION_TABLES) {
    edit(view(b), at);
    fixCrc(b, at, 64 * KiB);
  }
}

/** Index of a region table entry by GUID, and its file offset. */
export function region(b: Uint8Array, guid: Uint8Array): { entryAt: number; offset: number; length: number } {
  const v = view(b);
  const count = v.getUint32(REGION_TABLES[0] + 8, true);
  for (let i = 0; i < count; i++) {
    const entryAt = REGION_TABLES[0] + 16 + 32 * i;
    if (guidEqual(b.subarray(entryAt, entryAt + 16), guid)) {
      return { entryAt, offset: Number(v.getBigUint64(entryAt + 16, true)), length: v.getUint32(entryAt + 24, true) };
    }
  }
  throw new Error('region not found');
}

export const batRegion = (b: Uint8Array) => region(b, BAT_REGION);
export const metadataRegion = (b: Uint8Array) => region(b, METADATA_REGION);

/** The metadata table entry for an item GUID: where the entry is and where its value is. */
export function metadataItem(b: Uint8Array, guid: Uint8Array): { entryAt: number; valueAt: number } {
  const md = metadataRegion(b).offset;
  const v = view(b);
  const count = v.getUint16(md + 10, true);
  for (let i = 0; i < count; i++) {
    const entryAt = md + 32 + 32 * i;
    if (guidEqual(b.subarray(entryAt, entryAt + 16), guid)) return { entryAt, valueAt: md + v.getUint32(entryAt + 16, true) };
  }
  throw new Error('metadata item not found');
}

export const LOG_GUID = Uint8Array.from({ length: 16 }, (_, i) => 0x10 + i);

/**
 * Sets a log GUID in both headers and writes one log entry at the start of the log: descriptor
 * sectors (the header, then 32-byte descriptors), then one data sector per descriptor.
 */
export function writeLogEntry(
  b: Uint8Array,
  opts: { sequence?: bigint; descriptorSignature?: string; corruptCrc?: boolean; descriptors?: number; sectors?: number } = {},
): void {
  patchHeaders(b, (v, at) => b.set(LOG_GUID, at + 48));
  const v = view(b);
  const logAt = Number(v.getBigUint64(HEADERS[0] + 72, true));
  const n = opts.descriptors ?? 1;
  const seq = opts.sequence ?? 1n;
  const descSectors = Math.ceil((n + 2) / 128);
  const entryLength = 4 * KiB * (opts.sectors ?? descSectors + n);
  const entry = new Uint8Array(Math.max(entryLength, 4 * KiB * (descSectors + n)));
  const e = view(entry);
  entry.set(new TextEncoder().encode('loge'), 0);
  e.setUint32(8, entryLength, true);
  e.setBigUint64(16, seq, true);
  e.setUint32(24, n, true);
  entry.set(LOG_GUID, 32);
  e.setBigUint64(48, BigInt(b.length), true);
  e.setBigUint64(56, BigInt(b.length), true);
  for (let i = 0; i < n; i++) {
    const d = 64 + 32 * i;
    entry.set(new TextEncoder().encode(opts.descriptorSignature ?? 'desc'), d);
    e.setBigUint64(d + 16, BigInt(4 * MiB + 4 * KiB * i), true);
    e.setBigUint64(d + 24, seq, true);
    const s = 4 * KiB * (descSectors + i);
    entry.set(new TextEncoder().encode('data'), s);
    e.setUint32(s + 4, Number(seq >> 32n), true);
    entry.fill(0xab, s + 8, s + 4092);
    e.setUint32(s + 4092, Number(seq & 0xffff_ffffn), true);
  }
  e.setUint32(4, crc32c(entry.subarray(0, entryLength)) ^ (opts.corruptCrc ? 1 : 0), true);
  b.set(entry, logAt);
}
