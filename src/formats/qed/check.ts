// `qemu-img check` for qed (qemu's qed_check, read-only): every table and data cluster must be
// aligned, inside the file and used once; clusters after the header that nothing uses are leaks.
// One bit per cluster of the file (qemu's used_clusters bitmap).
import type { BlockDevice, Image } from '../types.ts';
import type { CheckReport } from '../check-types.ts';
import { readAt } from '../bytes.ts';
import { readQedHeader, tableEntries, validClusterOffset, validTableOffset, type QedHeader } from './header.ts';

class UsedClusters {
  private bits: Uint8Array;
  constructor(readonly count: number) {
    this.bits = new Uint8Array(Math.ceil(count / 8));
  }

  has(c: number): boolean {
    return c < this.count && (this.bits[c >> 3] & (1 << (c % 8))) !== 0;
  }

  /** qed_set_used_clusters: marks n clusters; false (and corruptions counted) when any was used. */
  mark(offset: bigint, n: number, h: QedHeader, report: CheckReport): boolean {
    let corruptions = 0;
    const first = Number(offset / BigInt(h.clusterSize));
    for (let c = first; c < first + n; c++) {
      if (this.has(c)) corruptions++;
      if (c < this.count) this.bits[c >> 3] |= 1 << (c % 8);
    }
    report.corruptions += corruptions;
    return corruptions === 0;
  }
}

/**
 * check -r's fixes (qed_check in fix mode, whatever the -r mode): an invalid offset is cleared in
 * the table held in memory, counted as fixed, and each table that changed is written back whole.
 */
export interface QedFixes {
  /** Whole tables to write back, L2 tables in walk order, the L1 table last. */
  writes: { pos: number; bytes: Buffer }[];
  /** Bytes held in `writes`; past MAX_HELD_BYTES the walk stops holding and sets `tooLarge`. */
  held: number;
  tooLarge?: boolean;
}

/** Most bytes of fixed tables one repair holds (a qed table can be 1 GiB: 64 MiB clusters, 16 of them). */
const MAX_HELD_BYTES = 256 * 1024 * 1024;

function hold(fixes: QedFixes, pos: bigint, bytes: Buffer): void {
  fixes.held += bytes.length;
  if (fixes.held > MAX_HELD_BYTES) fixes.tooLarge = true;
  else fixes.writes.push({ pos: Number(pos), bytes });
}

/** An invalid entry: cleared and counted as fixed in fix mode, a corruption otherwise. */
function invalid(table: Buffer, i: number, report: CheckReport, fixes: QedFixes | undefined): void {
  if (!fixes) {
    report.corruptions++;
    return;
  }
  table.writeBigUInt64LE(0n, i * 8);
  report['corruptions-fixed']++;
}

function checkL2(dev: BlockDevice, h: QedHeader, offset: bigint, used: UsedClusters, report: CheckReport, fixes?: QedFixes): void {
  const table = readAt(dev, offset, h.clusterSize * h.tableSize); // validated inside the file
  let last = 0n;
  let cleared = false;
  for (let i = 0; i < tableEntries(h); i++) {
    const entry = table.readBigUInt64LE(i * 8);
    if (entry === 0n || entry === 1n) continue; // unallocated, zero
    report['allocated-clusters']++;
    if (last !== 0n && last + BigInt(h.clusterSize) !== entry) report['fragmented-clusters']++;
    last = entry;
    if (!validClusterOffset(h, entry)) {
      invalid(table, i, report, fixes);
      cleared = true;
      continue;
    }
    used.mark(entry, 1, h, report);
  }
  if (fixes && cleared) hold(fixes, offset, table);
}

export function checkQed(_image: Image, dev: BlockDevice, report: CheckReport): void {
  walkQed(dev, report);
}

/** qed_check: the tables walked from the L1 table, then the leaks; with `fixes`, fix mode. */
export function walkQed(dev: BlockDevice, report: CheckReport, fixes?: QedFixes): QedHeader {
  const h = readQedHeader(dev);
  const cs = BigInt(h.clusterSize);
  // The file size is rounded down to whole clusters; the bitmap is an eighth of a byte per cluster.
  const used = new UsedClusters(Number(h.fileSize / cs));
  report['total-clusters'] = Number((h.imageSize + cs - 1n) / cs);
  used.mark(h.l1Offset, h.tableSize, h, report);
  const l1 = readAt(dev, h.l1Offset, h.clusterSize * h.tableSize);
  let cleared = false;
  for (let i = 0; i < tableEntries(h); i++) {
    const offset = l1.readBigUInt64LE(i * 8);
    if (offset === 0n) continue;
    if (!validTableOffset(h, offset)) {
      invalid(l1, i, report, fixes);
      cleared = true;
      continue;
    }
    if (!used.mark(offset, h.tableSize, h, report)) continue;
    checkL2(dev, h, offset, used, report, fixes);
  }
  if (fixes && cleared) hold(fixes, h.l1Offset, l1);
  for (let c = h.headerSize; c < used.count; c++) if (!used.has(c)) report.leaks++;
  return h;
}
