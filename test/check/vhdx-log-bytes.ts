// Dirty-log VHDX images for the repair tests: one log entry written by the vhdx tests' helper,
// then any field of the entry or its descriptors patched and the entry's checksum sealed again.
import { crc32c } from '../../src/formats/vhdx/crc32c.ts';
import { HEADERS, KiB, view, writeLogEntry } from '../formats/vhdx/vhdx-bytes.ts';

export { writeLogEntry };

/** Where the log starts (the current header's log offset; both headers agree in these images). */
export const logOffset = (b: Uint8Array): number => Number(view(b).getBigUint64(HEADERS[0] + 72, true));

/** Recomputes the checksum of the log's first entry after an edit. */
export function sealEntry(b: Uint8Array): void {
  const at = logOffset(b);
  const v = view(b);
  const length = v.getUint32(at + 8, true);
  v.setUint32(at + 4, 0, true);
  v.setUint32(at + 4, crc32c(b.subarray(at, at + length)), true);
}

/** Edits the first entry (fields at their offsets from the entry's start) and seals it again. */
export function patchEntry(b: Uint8Array, edit: (v: DataView, at: number) => void): void {
  edit(view(b), logOffset(b));
  sealEntry(b);
}

/** Offset (from the entry's start) of descriptor i. */
export const descriptorAt = (i: number): number => 64 + 32 * i;

export const SECTOR = 4 * KiB;
