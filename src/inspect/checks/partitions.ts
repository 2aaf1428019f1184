// Raw disks with a partition table: oslo.utils' MBR rules (valid boot flags, a protective MBR
// that is alone and starts at LBA 1, at least one partition) plus what instar adds: every MBR and
// GPT partition lies inside the file, inside the GPT's usable area, and no two overlap.
import { readAt } from '../../formats/bytes.ts';
import type { Window } from '../window.ts';
import { gptHeaderAt } from '../signatures.ts';
import { check, type CheckResult } from '../types.ts';

const PROTECTIVE = 0xee;
/** The most GPT entries looked at (the standard table has 128). */
const MAX_GPT_ENTRIES = 1024;
/** The largest GPT entry looked at (the standard one is 128 bytes); bounds the table read to 1 MiB. */
const MAX_GPT_ENTRY_SIZE = 1024;

interface Span {
  name: string;
  start: bigint;
  end: bigint; // exclusive, in sectors
}

function overlapping(spans: Span[]): string | undefined {
  const sorted = [...spans].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].start < sorted[i - 1].end) return `${sorted[i - 1].name} and ${sorted[i].name} overlap`;
  }
  return undefined;
}

/** oslo's MBR rules, then bounds and overlaps of the primary partitions. */
function mbrReason(w: Window): string | undefined {
  const mbr = readAt(w, 0, 512);
  const sectors = BigInt(Math.floor(w.size / 512));
  const used: number[] = [];
  const spans: Span[] = [];
  let protective = false;
  for (let i = 0; i < 4; i++) {
    const e = 446 + 16 * i;
    if (mbr[e] !== 0x00 && mbr[e] !== 0x80) return `MBR partition ${i} has an invalid boot flag`;
    const type = mbr[e + 4];
    if (type === 0) continue;
    used.push(i);
    const start = BigInt(mbr.readUInt32LE(e + 8));
    const count = BigInt(mbr.readUInt32LE(e + 12));
    if (type === PROTECTIVE) {
      protective = true;
      if (mbr[e + 1] !== 0 || mbr[e + 2] !== 2 || mbr[e + 3] !== 0) return 'the protective MBR has an invalid start CHS';
      if (start !== 1n) return 'the protective MBR does not start at LBA 1';
      continue; // it covers the disk by definition (or 0xFFFFFFFF sectors for big ones)
    }
    if (start === 0n || count === 0n) return `MBR partition ${i} is empty or starts at LBA 0`;
    if (start + count > sectors) return `MBR partition ${i} ends at sector ${start + count}, past the end of the file (${sectors} sectors)`;
    spans.push({ name: `MBR partition ${i}`, start, end: start + count });
  }
  if (protective && (used.length !== 1 || used[0] !== 0)) return 'the protective MBR defines other partitions';
  if (used.length === 0) return 'the MBR defines no partition';
  return overlapping(spans);
}

/** The GPT header's usable area and every entry in use. */
function gptReason(w: Window, sector: 512 | 4096): string | undefined {
  const h = readAt(w, sector, 92);
  const sectors = BigInt(Math.floor(w.size / sector));
  const firstUsable = h.readBigUInt64LE(40);
  const lastUsable = h.readBigUInt64LE(48);
  const entriesLba = h.readBigUInt64LE(72);
  const count = h.readUInt32LE(80);
  const entrySize = h.readUInt32LE(84);
  if (firstUsable > lastUsable || lastUsable >= sectors) return `the GPT's usable area (LBA ${firstUsable}-${lastUsable}) is not inside the file (${sectors} sectors)`;
  if (entrySize < 128 || entrySize > MAX_GPT_ENTRY_SIZE || entrySize % 8 !== 0 || count > MAX_GPT_ENTRIES) return `the GPT entry array is malformed (${count} entries of ${entrySize} bytes)`;
  const tableStart = entriesLba * BigInt(sector);
  if (entriesLba < 2n || tableStart + BigInt(count * entrySize) > BigInt(w.size)) return `the GPT entry array (LBA ${entriesLba}) is not inside the file`;
  const table = readAt(w, tableStart, count * entrySize);
  const spans: Span[] = [];
  for (let i = 0; i < count; i++) {
    const e = table.subarray(i * entrySize, i * entrySize + 128);
    if (e.subarray(0, 16).every((b) => b === 0)) continue; // unused entry
    const first = e.readBigUInt64LE(32);
    const last = e.readBigUInt64LE(40);
    if (first > last || first < firstUsable || last > lastUsable) {
      return `GPT partition ${i + 1} (LBA ${first}-${last}) lies outside the usable area`;
    }
    spans.push({ name: `GPT partition ${i + 1}`, start: first, end: last + 1n });
  }
  return overlapping(spans);
}

export function partitionChecks(w: Window): CheckResult[] {
  const checks = [check('mbr', () => mbrReason(w))];
  const sector = gptHeaderAt(w.prefix);
  if (sector) checks.push(check('gpt', () => gptReason(w, sector)));
  return checks;
}
