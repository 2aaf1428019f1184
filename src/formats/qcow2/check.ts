// `qemu-img check` for qcow2 (read-only): rebuild the references from the metadata, compare them
// with the stored refcounts, then check the COPIED flags, in the order of qemu's
// qcow2_check_refcounts so that the report's lines come in the same order.
import type { BlockDevice, Image } from '../types.ts';
import { addLine, CheckFailure, emptyReport, type CheckReport } from '../check-types.ts';
import { cString, readAt, requestOk } from '../bytes.ts';
import { INCOMPAT, MAX_L1_BYTES, SNAPSHOT_HEADER_SIZE, parseHeader, type Qcow2Header } from './header.ts';
import { readExtensions, type Extensions } from './extensions.ts';
import type { LuksInfo } from '../luks/header.ts';
import { ComputedRefcounts, MAX_CHECKED_CLUSTERS, RefcountReadError, StoredRefcounts, type Refcount } from './check-refcounts.ts';
import { ReferenceCounter, WalkBudget, clusterType, entryBigInt, readL2Entry } from './check-tables.ts';
import { checkSnapshotTable } from './check-snapshots.ts';

const INT_MAX = 0x7fffffff;
const hex = (v: bigint | number) => v.toString(16);

/** Shared state of one check: what qcow2_signal_corruption has said already, and whether qemu's fix mode would rebuild the refcounts. */
export class Context {
  signaled = false;
  /** qemu's `rebuild`: a refcount block entry or a stored refcount of 0 that only a new refcount structure fixes. */
  rebuild = false;
  constructor(readonly report: CheckReport, readonly stored: StoredRefcounts) {}

  /** qcow2_get_refcount; undefined where qemu's call fails (its corruption notice printed once). */
  refcount(cluster: number): Refcount | undefined {
    try {
      return this.stored.get(cluster);
    } catch (e) {
      if (!(e instanceof RefcountReadError)) throw e;
      if (e.corruption && !this.signaled) {
        this.signaled = true;
        addLine(this.report, `qcow2: Image is corrupt: ${e.corruption}; further non-fatal corruption events will be suppressed`);
      }
      return undefined;
    }
  }
}

interface SnapshotRef {
  id: string;
  name: string;
  l1Offset: bigint;
  l1Size: number;
}

/** The snapshot table's entries and its length, walked as qcow2_do_read_snapshots does. */
function readSnapshotTable(dev: BlockDevice, h: Qcow2Header, report: CheckReport): { list: SnapshotRef[]; bytes: bigint } {
  const list: SnapshotRef[] = [];
  let offset = h.snapshotsOffset;
  // The table opened already: nb_snapshots ≤ 65536, each entry's extra data ≤ 1 KiB.
  for (let i = 0; i < h.nbSnapshots; i++) {
    offset = ((offset + 7n) / 8n) * 8n;
    const e = readAt(dev, offset, SNAPSHOT_HEADER_SIZE);
    // Version 3 entries must carry at least vm_state_size_large and disk_size (16 bytes of extra data).
    if (h.version === 3 && e.readUInt32BE(36) < 16) {
      addLine(report, `ERROR snapshot table entry ${i} is incomplete`);
      report.corruptions++;
    }
    offset += BigInt(SNAPSHOT_HEADER_SIZE + e.readUInt32BE(36));
    const id = cString(readAt(dev, offset, e.readUInt16BE(12)));
    offset += BigInt(e.readUInt16BE(12));
    const name = cString(readAt(dev, offset, e.readUInt16BE(14)));
    offset += BigInt(e.readUInt16BE(14));
    list.push({ id, name, l1Offset: e.readBigUInt64BE(0), l1Size: e.readUInt32BE(8) });
  }
  return { list, bytes: offset - h.snapshotsOffset };
}

/** The bitmap directory's tables (qcow2_check_bitmaps_refcounts): the directory, each table, each cluster. */
function countBitmaps(dev: BlockDevice, ext: Extensions, counter: ReferenceCounter, report: CheckReport): void {
  const bm = ext.bitmaps;
  if (!bm) return;
  counter.inc(bm.directoryOffset, bm.directorySize);
  // The directory was checked when the image opened; its size is at most 64 MiB.
  const dir = readAt(dev, bm.directoryOffset, Number(bm.directorySize));
  for (let pos = 0; pos + 24 <= dir.length;) {
    const tableOffset = dir.readBigUInt64BE(pos);
    const tableSize = dir.readUInt32BE(pos + 8);
    const entryLen = 24 + dir.readUInt32BE(pos + 20) + dir.readUInt16BE(pos + 18);
    pos += Math.ceil(entryLen / 8) * 8;
    counter.inc(tableOffset, BigInt(tableSize) * 8n);
    const table = readAt(dev, tableOffset, tableSize * 8); // table sizes were bounded at open
    for (let i = 0; i < tableSize; i++) {
      const entry = table.readBigUInt64BE(i * 8);
      const offset = entry & 0x00fffffffffffe00n;
      const bad = (entry & 0xff000000000001fen) !== 0n || (offset !== 0n && ((entry & 1n) !== 0n || offset % BigInt(counter.cs) !== 0n));
      if (bad) {
        report.corruptions++;
        continue;
      }
      if (offset !== 0n) counter.inc(offset, BigInt(counter.cs));
    }
  }
}

/**
 * check_refblocks: each refcount block must be referenced exactly once, by the table.
 * `grownFrom`: -r all over a device already grown as qemu grows the file to each block past its
 * end (the clusters the file had): such a block gets qemu's "Repairing" line and is counted.
 */
function countRefblocks(ctx: Context, counter: ReferenceCounter, refs: ComputedRefcounts, grownFrom?: number): void {
  let limit = grownFrom ?? refs.length;
  const { stored, report } = ctx;
  const cs = BigInt(counter.cs);
  for (let i = 0; i < stored.tableEntries; i++) {
    const raw = stored.table.readBigUInt64BE(i * 8);
    if (raw === 0n) continue;
    const offset = raw & 0xfffffffffffffe00n;
    const error = (line: string) => {
      addLine(report, line);
      report.corruptions++;
      ctx.rebuild = true;
    };
    if (raw & 0x1ffn) {
      error(`ERROR refcount table entry ${i} has reserved bits set`);
      continue;
    }
    if (offset % cs !== 0n) {
      error(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
      continue;
    }
    if (offset / cs >= BigInt(limit)) {
      // qemu's fix mode grows the file to the block (the planner grew the device already).
      addLine(report, `${grownFrom === undefined ? 'ERROR' : 'Repairing'} refcount block ${i} is outside image`);
      report.corruptions++;
      if (grownFrom === undefined) continue;
      limit = Number(offset / cs) + 1;
    }
    counter.inc(offset, cs);
    const count = refs.get(Number(offset / cs));
    if (count !== 1) error(`ERROR refcount block ${i} refcount=${count}`);
  }
}

/** compare_refcounts: stored against counted, cluster by cluster; returns the highest used cluster. */
export function compare(ctx: Context, refs: ComputedRefcounts): number {
  const { report } = ctx;
  let highest = 0;
  let run: [0 | 1, number, number, string, string] | undefined;
  const flush = () => {
    if (run) addLine(report, run);
    run = undefined;
  };
  for (let i = 0; i < refs.length; i++) {
    const stored = ctx.refcount(i);
    if (stored === undefined) {
      flush();
      addLine(report, `Can't get refcount for cluster ${i}: Input/output error`);
      report['check-errors']++;
      continue;
    }
    const counted = refs.get(i);
    if (stored > 0 || counted > 0) highest = i;
    // A 64-bit refcount may be a bigint: loose equality compares it with the counted number.
    if (stored == counted) continue;
    if (stored == 0) ctx.rebuild = true;
    const kind = stored < counted ? 1 : 0;
    if (kind === 1) report.corruptions++;
    else report.leaks++;
    const s = String(stored);
    const c = String(counted);
    if (run && run[0] === kind && run[1] + run[2] === i && run[3] === s && run[4] === c) run[2]++;
    else {
      flush();
      run = [kind, i, 1, s, c];
    }
  }
  flush();
  return highest;
}

/** check_oflag_copied after a repair: the refcounts it judges by, and whether it repairs (the table writes it makes). */
export interface CopiedFlagsRepair {
  /** The refcounts after the refcount repairs (undefined: unreadable, skipped as qemu skips it). */
  refcount(cluster: number): Refcount | undefined;
  /** Present when the flags are repaired: whole L1 sectors and L2 tables rewritten, in qemu's order. */
  writes?: { pos: number; bytes: Buffer }[];
  /** Where the lines and counts go (the repair's own report). */
  report: CheckReport;
}

/** check_oflag_copied: the COPIED flag must be set exactly where the refcount is 1. */
export function checkCopiedFlags(ctx: Context, dev: BlockDevice, h: Qcow2Header, hasDataFile: boolean, budget: WalkBudget, fix?: CopiedFlagsRepair): void {
  const report = fix?.report ?? ctx.report;
  const repair = fix?.writes ? { writes: fix.writes } : undefined;
  const cs = h.clusterSize;
  const l1 = readAt(dev, h.l1TableOffset, h.l1Size * 8);
  const entryBytes = h.extendedL2 ? 16 : 8;
  const refcountOf = (cluster: number) => (fix ? fix.refcount(cluster) : ctx.refcount(cluster));
  const found = (line: string) => {
    addLine(report, `${repair ? 'Repairing' : 'ERROR'} ${line}`);
    if (repair) report['corruptions-fixed']++;
    else report.corruptions++;
  };
  const COPIED = 1n << 63n;
  for (let i = 0; i < h.l1Size; i++) {
    const l1Entry = l1.readBigUInt64BE(i * 8);
    const l2Offset = l1Entry & 0x00fffffffffffe00n;
    if (l2Offset === 0n) continue;
    const refcount = refcountOf(Number(l2Offset / BigInt(cs)));
    if (refcount === undefined) continue;
    if ((refcount == 1) !== ((l1Entry & COPIED) !== 0n)) {
      found(`OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${hex(l1Entry)} refcount=${refcount}`);
      if (repair) {
        // qcow2_write_l1_entry writes the entry's whole 512-byte sector of the table.
        l1.writeBigUInt64BE(refcount == 1 ? l1Entry | COPIED : l1Entry & ~COPIED, i * 8);
        const start = Math.floor((i * 8) / 512) * 512;
        repair.writes.push({ pos: Number(h.l1TableOffset) + start, bytes: Buffer.from(l1.subarray(start, Math.min(start + 512, l1.length))) });
      }
    }
    if (!requestOk(l2Offset, BigInt(cs))) {
      addLine(report, 'ERROR: Could not read L2 table: Input/output error');
      report['check-errors']++;
      throw new CheckFailure('Input/output error');
    }
    const table = readAt(dev, l2Offset, cs);
    budget.spend(cs / entryBytes);
    let dirty = false;
    for (let j = 0; j < cs / entryBytes; j++) {
      const e = readL2Entry(table, j, entryBytes);
      const type = clusterType(e, h.extendedL2, hasDataFile);
      if (type !== 'normal' && type !== 'zero-alloc') continue;
      const count = hasDataFile ? 1 : refcountOf(Math.floor(e.offset / cs));
      if (count === undefined) continue;
      if ((count == 1) !== ((e.hi & 0x80000000) !== 0)) {
        found(`OFLAG_COPIED data cluster: l2_entry=${hex(entryBigInt(e))} refcount=${count}`);
        if (repair) {
          table.writeUInt32BE(count == 1 ? (e.hi | 0x80000000) >>> 0 : e.hi & 0x7fffffff, j * entryBytes);
          dirty = true;
        }
      }
    }
    if (dirty) repair!.writes.push({ pos: Number(l2Offset), bytes: table });
  }
}

/** Everything a check counted before it compares: the references, the stored refcounts, the walk's state. */
export interface CountedImage {
  h: Qcow2Header;
  ctx: Context;
  refs: ComputedRefcounts;
  hasDataFile: boolean;
  budget: WalkBudget;
}

/** calculate_refcounts: the references to every host cluster, with the lines qemu prints on the way. */
export function countReferences(image: Image, dev: BlockDevice, report: CheckReport, opts: { recount?: boolean; grownFrom?: number; preallocFixes?: { pos: number; bytes: Buffer }[] } = {}): CountedImage {
  const h = parseHeader(dev);
  // The extensions opened already; the LUKS header itself is not needed here.
  const ext = readExtensions(dev, h, false, () => ({}) as LuksInfo);
  const cs = h.clusterSize;
  // bdrv_getlength counts whole sectors.
  const clusters = Math.ceil(Math.ceil(dev.size / 512) * 512 / cs);
  if (clusters > INT_MAX) {
    report['check-errors']++;
    throw new CheckFailure('File too large');
  }
  if (clusters > MAX_CHECKED_CLUSTERS) {
    // qemu would count up to INT_MAX clusters (gigabytes of counters); instar refuses sooner.
    throw new CheckFailure(`File too large for instar (${clusters} clusters, at most ${MAX_CHECKED_CLUSTERS})`);
  }
  const hasDataFile = (h.incompatible & INCOMPAT.dataFile) !== 0n;
  report['total-clusters'] = Math.ceil(image.virtualSize / cs);
  const refcountMax = h.refcountOrder >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** 2 ** h.refcountOrder - 1;
  const refs = new ComputedRefcounts(clusters, refcountMax);
  const budget = new WalkBudget();
  const counter = new ReferenceCounter(dev, h, refs, report, hasDataFile, budget);
  counter.preallocFixes = opts.preallocFixes;
  const ctx = new Context(report, new StoredRefcounts(dev, h));

  // qcow2_check_read_snapshot_table runs first, then the refcounts are counted.
  // A recount (after a refcount rebuild) is calculate_refcounts alone: the snapshot table's own check is not repeated.
  const tableReport = opts.recount ? emptyReport() : report;
  checkSnapshotTable(dev, h, tableReport);
  const snapshots = readSnapshotTable(dev, h, tableReport);
  counter.inc(0n, BigInt(cs));
  counter.l1(h.l1TableOffset, h.l1Size, true);
  if (hasDataFile && h.nbSnapshots > 0) {
    addLine(report, `ERROR ${h.nbSnapshots} snapshots in image with data file`);
    report.corruptions++;
  }
  for (const sn of snapshots.list) {
    if (sn.l1Offset % BigInt(cs) !== 0n) {
      addLine(report, `ERROR snapshot ${sn.id} (${sn.name}) l1_offset=${sn.l1Offset === 0n ? '0' : '0x' + hex(sn.l1Offset)}: L1 table is not cluster aligned; snapshot table entry corrupted`);
      report.corruptions++;
      continue;
    }
    if (sn.l1Size > MAX_L1_BYTES / 8) {
      addLine(report, `ERROR snapshot ${sn.id} (${sn.name}) l1_size=0x${hex(sn.l1Size)}: L1 table is too large; snapshot table entry corrupted`);
      report.corruptions++;
      continue;
    }
    counter.l1(sn.l1Offset, sn.l1Size, false);
  }
  counter.inc(h.snapshotsOffset, snapshots.bytes);
  counter.inc(h.refcountTableOffset, BigInt(h.refcountTableClusters) * BigInt(cs));
  if (ext.crypto && ext.crypto.length !== 0n) counter.inc(ext.crypto.offset, ext.crypto.length);
  countBitmaps(dev, ext, counter, report);
  countRefblocks(ctx, counter, refs, opts.grownFrom);
  return { h, ctx, refs, hasDataFile, budget };
}

/** qcow2_co_check without repair. */
export function checkQcow2(image: Image, dev: BlockDevice, report: CheckReport): void {
  const counted = countReferences(image, dev, report);
  const highest = compare(counted.ctx, counted.refs);
  checkCopiedFlags(counted.ctx, dev, counted.h, counted.hasDataFile, counted.budget);
  report['image-end-offset'] = (highest + 1) * counted.h.clusterSize;
}
