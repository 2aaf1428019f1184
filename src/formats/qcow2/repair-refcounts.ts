// check -r for qcow2 (qemu's qcow2_check_refcounts in fix mode), planned from a fresh count of
// the image's references:
//  - leaks (-r leaks and all) and refcounts below their references (-r all): each such cluster
//    gets its references as its refcount, with qemu's "Repairing cluster" lines; a cluster freed
//    this way is discarded by qemu (a hole punched, one request per cluster), and by instar (a
//    discard step);
//  - -r all, when only a new refcount structure helps (a stored refcount of 0 under a reference,
//    a broken refcount table entry): qemu's rebuild (rebuild-refcounts.ts), then the old
//    structure's clusters freed as leaks;
//  - then the COPIED flags set where the (repaired) refcount is 1, cleared elsewhere.
// Anything else (bad L1/L2 entries, unreadable refcounts, refcount blocks past the end) needs
// qemu's other repairs: instar refuses the image, writing nothing. Persistent bitmaps are marked in
// use before the repair and stored anew at close (bitmap-plan.ts); a data file's clusters are not
// refcounted and the data file is not written. A dirty image (lazy refcounts) is repaired as any
// other and marked clean last, as qemu does; so is a corrupt one, whose bit qemu clears last when
// the repair leaves no corruption.
import { CheckFailure, addLine, emptyReport, type CheckLine, type CheckReport, type RepairMode, type RepairPlan, type RepairPlanner } from '../check-types.ts';
import type { RepairStep } from '../repair.ts';
import { AUTOCLEAR, INCOMPAT, parseHeader, type Qcow2Header } from './header.ts';
import { readHeaderModel } from './header-model.ts';
import { serializeHeader } from './header-write.ts';
import { checkCopiedFlags, checkQcow2, compare, countReferences, type CountedImage } from './check.ts';
import { readAt } from '../bytes.ts';
import { writeRefcount } from './refcount-entry.ts';
import { ClusterCounts, rebuildRefcounts, serializeBlock } from './rebuild-refcounts.ts';
import { ImageError, type BlockDevice, type Image } from '../types.ts';
import { planBitmapReopen } from './bitmap-plan.ts';
import { openWritesBitmaps } from './bitmap-session.ts';
import { PlanRefusal } from './refcount-update.ts';
import { OverlayDevice } from '../overlay-device.ts';
import { ReplayedDevice } from '../replayed-device.ts';
import { StoredRefcounts, type Refcount } from './check-refcounts.ts';

/** Most bytes of refcount blocks one repair holds in memory before writing them. */
const MAX_HELD_BYTES = 256 * 1024 * 1024;

/** The autoclear bits qemu knows; a writable open clears the others, rewriting the header. */
const KNOWN_AUTOCLEAR = AUTOCLEAR.bitmaps | AUTOCLEAR.dataFileRaw;

const refused = (why: string): { refused: string } => ({ refused: `instar cannot repair this qcow2 image (${why}); nothing was written` });

/** Lines of the count whose fix mode does more than print them (zero an entry): instar leaves those to qemu. */
const FIXED_DIFFERENTLY = [/^(?!(ERROR|Repairing) refcount block \d+ is outside image$).*is outside image$/];

/** Most bytes -r all grows the file by to reach refcount blocks past its end (qemu has no bound). */
const MAX_GROWTH = 1024 * 1024 * 1024;

/**
 * The file's size after qemu's -r all grows it to each refcount block past its end, in table
 * order (a block below an earlier growth is inside by then); undefined when nothing grows.
 */
function grownSize(h: Qcow2Header, stored: { tableEntries: number; table: Buffer }, size: number): number | undefined {
  const cs = BigInt(h.clusterSize);
  let clusters = BigInt(Math.ceil(Math.ceil(size / 512) * 512 / h.clusterSize));
  let grown = false;
  for (let i = 0; i < stored.tableEntries; i++) {
    const raw = stored.table.readBigUInt64BE(i * 8);
    if (raw === 0n || raw & 0x1ffn || (raw & 0xfffffffffffffe00n) % cs !== 0n) continue;
    const cluster = (raw & 0xfffffffffffffe00n) / cs;
    if (cluster < clusters) continue;
    clusters = cluster + 1n;
    grown = true;
  }
  return grown ? Number(clusters * cs) : undefined;
}

type Run = [0 | 1, number, number, string, string];
const isRun = (l: CheckLine): l is Run => Array.isArray(l) && (l[0] === 0 || l[0] === 1);

export const repairQcow2: RepairPlanner = (image, dev, report, mode, ctx): RepairPlan => {
  const h = parseHeader(dev);
  if (!openWritesBitmaps(dev) && !(h.autoclear & ~KNOWN_AUTOCLEAR)) return planRepair(image, dev, report, mode, h);
  // Persistent bitmaps: qemu's writable open marks them in use (in place), the repair runs, and
  // the close stores them anew through the allocator, after the second check. A stale bitmaps
  // extension or an unknown autoclear bit: the open drops it from the header.
  let reopen: ReturnType<typeof planBitmapReopen>;
  try {
    reopen = planBitmapReopen(dev);
    if (h.nbSnapshots > 0 && reopen.open.some((s) => s.kind === 'write' && s.pos === 0)) {
      // qemu's check-mode open has not read the snapshot table (the check reads it later, from
      // the header on disk): a header the open rewrites names no snapshots. Their tables and the
      // clusters only they held are then repaired as leaks.
      const what = openWritesBitmaps(dev) ? 'persistent bitmaps' : 'an unknown autoclear bit';
      if (!ctx?.unsafeQuirks) return refused(`it has ${what} and internal snapshots: qemu-img would drop the snapshots; --unsafe-quirks does so too`);
      return planWithoutSnapshots(image, dev, report, mode);
    }
  } catch (e) {
    if (e instanceof PlanRefusal || e instanceof ImageError) return refused(`its bitmaps: ${e.message}`);
    throw e;
  }
  const plan = planRepair(image, dev, report, mode, h);
  if ('refused' in plan) return plan;
  return withClose(dev, [...reopen.open, { kind: 'barrier' }, ...plan.steps], reopen);
};

/**
 * The repair's steps and the close's, planned now over the file as the steps leave it (the second
 * check writes nothing): a close instar cannot make (qemu's fails freeing a table whose refcount
 * is 0 or lies past the end) refuses the image before anything is written.
 */
function withClose(dev: BlockDevice, steps: RepairStep[], reopen: ReturnType<typeof planBitmapReopen>): RepairPlan {
  let close: RepairStep[];
  try {
    close = reopen.close(new ReplayedDevice(dev, steps));
  } catch (e) {
    if (e instanceof PlanRefusal || e instanceof ImageError) return refused(`storing its bitmaps: ${e.message.replace(/; nothing was written$/, '')}`);
    throw e;
  }
  return { steps, close: () => close };
}

/** The header's nb_snapshots and snapshots_offset (bytes 60..72), as qemu's check-mode open holds them. */
const NO_SNAPSHOTS = { pos: 60, bytes: Buffer.alloc(12) };

/**
 * --unsafe-quirks: qemu's repair of an image whose open rewrites the header in check mode. The
 * open's writes are planned over the header without snapshots, so that they write it so; the
 * fix-mode check counts that image, whose report replaces the read-only check's.
 */
function planWithoutSnapshots(image: Image, dev: BlockDevice, report: CheckReport, mode: RepairMode): RepairPlan {
  const dropped = new OverlayDevice(dev, [NO_SNAPSHOTS]);
  const reopen = planBitmapReopen(dropped);
  const opened = new ReplayedDevice(dropped, reopen.open);
  const seen = emptyReport();
  try {
    checkQcow2(image, opened, seen);
  } catch (e) {
    if (e instanceof CheckFailure) return refused(`its check fails once the snapshots are dropped (${e.message})`);
    throw e;
  }
  const plan = planRepair(image, opened, seen, mode, parseHeader(opened));
  if ('refused' in plan) return plan;
  const planned = withClose(dev, [...reopen.open, { kind: 'barrier' }, ...plan.steps], reopen);
  if (!('refused' in planned)) Object.assign(report, seen);
  return planned;
}

/**
 * The repair qemu's writable open makes of a dirty image (fix-all check, not in check mode). Its
 * bitmaps are left to the command that follows, whose own open marks them in use and whose close
 * stores them: qemu marks them before this repair, but in place (the header and the directory),
 * which the repair neither reads nor moves, so the file ends the same.
 */
export function repairQcow2AtOpen(image: Image, dev: BlockDevice, report: CheckReport): RepairPlan {
  return planRepair(image, dev, report, 'all', parseHeader(dev));
}

function planRepair(image: Image, dev: BlockDevice, report: CheckReport, mode: RepairMode, h: Qcow2Header): RepairPlan {
  if (report.omitted) return refused('the check reported too many lines');
  if (report['check-errors']) return refused('its refcounts cannot all be read');
  if (!report.corruptions && !report.leaks) return { steps: markClean(dev, h, { consistent: true }) };

  // The check again, stage by stage: fix mode prints the count's and the comparison's lines, then its own.
  const fresh = emptyReport();
  let counted: CountedImage;
  // -r all grows the file to refcount blocks past its end first; the rebuild that must follow
  // (such a block reads as zeros) is planned over the grown file.
  const grown = mode === 'all' ? grownSize(h, new StoredRefcounts(dev, h), dev.size) : undefined;
  if (grown !== undefined && grown - dev.size > MAX_GROWTH) return refused('a refcount block lies more than 1 GiB past the end of the file');
  const original = Math.ceil(Math.ceil(dev.size / 512) * 512 / h.clusterSize);
  const preallocFixes: { pos: number; bytes: Buffer }[] = [];
  const work = grown === undefined ? dev : new OverlayDevice(dev, [{ pos: grown - 1, bytes: Buffer.alloc(1) }]);
  try {
    counted = countReferences(image, work, fresh, { grownFrom: grown === undefined ? undefined : original, preallocFixes: mode === 'all' ? preallocFixes : undefined });
  } catch (e) {
    if (e instanceof CheckFailure) return refused(e.message);
    throw e;
  }
  if (fresh['check-errors'] || fresh.lines.some((l) => typeof l !== 'string' || FIXED_DIFFERENTLY.some((re) => re.test(l)))) {
    return refused('it has corruptions that need qemu\'s table repairs');
  }
  const beforeCompare = { corruptions: fresh.corruptions };
  compare(counted.ctx, counted.refs);
  if (fresh['check-errors'] || fresh.omitted) return refused('its refcounts cannot all be read');
  const compared = { corruptions: fresh.corruptions - beforeCompare.corruptions };
  const { rebuild } = counted.ctx;
  const counts: Pick<CheckReport, 'corruptions' | 'leaks'> = { corruptions: fresh.corruptions, leaks: fresh.leaks };
  const lines = fresh.lines.slice();
  // Fix mode starts again from what the count found (qemu's pre_compare_res); corruptions it cannot fix stay counted.
  const out: CheckReport = { ...report, lines: [], corruptions: fresh.corruptions - compared.corruptions, leaks: 0, 'corruptions-fixed': fresh['corruptions-fixed'], 'leaks-fixed': 0 };
  for (const l of lines) addLine(out, l);
  if (rebuild && mode === 'leaks') {
    // Only -r all rebuilds: qemu's check fails here, having written nothing.
    addLine(out, 'ERROR need to rebuild refcount structures');
    Object.assign(report, out, { ...counts, 'check-errors': 1, failure: 'Input/output error' });
    return { steps: markClean(dev, h) };
  }

  if (grown !== undefined && !rebuild) return refused('its refcount blocks past the end of the file would not be rebuilt');
  if (preallocFixes.length && (rebuild || h.nbSnapshots > 0)) return refused('its misaligned preallocated clusters would need a rebuild or lie in snapshots');
  const plan = rebuild ? planRebuild(image, work, counted, out, counts) : planRefcountFixes(dev, counted, out, lines.filter(isRun), mode);
  if ('refused' in plan) return plan;
  if (grown !== undefined) growAfterSwitch(plan.steps, dev.size, grown);

  // check_oflag_copied, judged by the repaired refcounts (-r leaks repairs only when nothing is left).
  const writes: { pos: number; bytes: Buffer }[] = [];
  const repairFlags = mode === 'all' || (!out.corruptions && !out.leaks);
  // The L2 entries qemu rewrote while counting are read as rewritten.
  const fixedDev = preallocFixes.length ? new OverlayDevice(dev, preallocFixes) : dev;
  checkCopiedFlags(counted.ctx, fixedDev, counted.h, counted.hasDataFile, counted.budget, { refcount: plan.refcount, report: out, writes: repairFlags ? writes : undefined });
  // qemu writes the rewritten L2 entries first, during the count.
  const steps: RepairStep[] = [...preallocFixes.map((w): RepairStep => ({ kind: 'write', pos: w.pos, bytes: w.bytes })), ...(preallocFixes.length ? [{ kind: 'barrier' } as RepairStep] : []), ...plan.steps];
  for (const w of writes) steps.push({ kind: 'write', pos: w.pos, bytes: w.bytes });
  steps.push({ kind: 'barrier' });
  steps.push(...markClean(dev, h, { reftable: plan.reftable, consistent: !out.corruptions && !out['check-errors'] }));
  Object.assign(report, out);
  return { steps };
}

/**
 * qemu grows the file to the refcount blocks past its end before it rebuilds; instar grows it
 * after the header names the new structure, so that no cut-short repair leaves the old block
 * inside the file reading as zeros (more damage than before): the file first reaches only as far
 * as the new structure's writes, and `grown` (qemu's end) once the header has switched.
 */
function growAfterSwitch(steps: RepairStep[], size: number, grown: number): void {
  const header = steps.findIndex((s) => s.kind === 'write' && s.pos === 48);
  const first = steps.findIndex((s) => s.kind === 'truncate');
  if (first >= 0) steps.splice(first, 1);
  let end = size;
  for (const s of steps.slice(0, header)) if (s.kind === 'write') end = Math.max(end, s.pos + s.bytes.length);
  steps.splice(header + 1, 0, { kind: 'barrier' }, { kind: 'truncate', size: Math.max(grown, end) });
  if (end > size) steps.unshift({ kind: 'truncate', size: end }, { kind: 'barrier' });
}

interface RefcountPlan {
  steps: RepairStep[];
  refcount(cluster: number): Refcount | undefined;
  /** A rebuild's new refcount table: [offset, clusters]. */
  reftable?: [bigint, number];
}

/**
 * qcow2_mark_clean, which qemu runs when it closes an image it opened read-write (and at the end
 * of a repair): a dirty image (lazy refcounts cut short) gets its whole header rewritten without
 * the dirty bit, last, so that a repair cut short leaves the image dirty, to be repaired again.
 * `consistent`: the repair left no corruption and no check error, so qemu's qcow2_mark_consistent
 * clears the corrupt bit too (in the same header; a cut-short repair leaves it set).
 */
function markClean(dev: BlockDevice, h: Qcow2Header, opts: { reftable?: [bigint, number]; consistent?: boolean } = {}): RepairStep[] {
  const clear = INCOMPAT.dirty | (opts.consistent ? INCOMPAT.corrupt : 0n);
  if (!(h.incompatible & clear)) return [];
  const model = readHeaderModel(dev, h);
  model.incompatible &= ~clear;
  const reftable = opts.reftable;
  if (reftable) [model.refcountTableOffset, model.refcountTableClusters] = reftable;
  return [{ kind: 'write', pos: 0, bytes: serializeHeader(model) }, { kind: 'barrier' }];
}

/** compare_refcounts in fix mode: each fixable cluster's refcount set to its references. */
function planRefcountFixes(dev: BlockDevice, counted: CountedImage, out: CheckReport, runs: Run[], mode: RepairMode): RefcountPlan | { refused: string } {
  const { h, ctx } = counted;
  const stored = ctx.stored;
  const bits = 2 ** h.refcountOrder;
  const cs = h.clusterSize;
  const blocks = new Map<number, { offset: number; bytes: Buffer }>();
  const edited = new Map<number, Refcount>();
  // Runs of freed clusters, [first, end): a leak report may name millions of clusters.
  const freed: [number, number][] = [];
  for (const [kind, first, count, refcount, reference] of runs) {
    if (kind === 1 && mode === 'leaks') {
      // -r leaks leaves a refcount below its references: the comparison says so again.
      addLine(out, [kind, first, count, refcount, reference]);
      out.corruptions += count;
      continue;
    }
    const value = BigInt(reference);
    for (let cluster = first; cluster < first + count; cluster++) {
      const index = Math.floor(cluster / stored.perBlockCount);
      let block = blocks.get(index);
      if (!block) {
        if ((blocks.size + 1) * cs > MAX_HELD_BYTES) return refused('its repairs span too many refcount blocks');
        // The check read a refcount above zero here: the block is present, aligned and readable.
        const offset = Number(stored.entryOffset(index));
        block = { offset, bytes: readAt(dev, offset, cs) };
        blocks.set(index, block);
      }
      writeRefcount(block.bytes, cluster % stored.perBlockCount, bits, value);
      edited.set(cluster, value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value);
      if (value !== 0n) continue;
      const last = freed.at(-1);
      if (last && last[1] === cluster) last[1]++;
      else freed.push([cluster, cluster + 1]);
    }
    addLine(out, [3, first, count, refcount, reference]);
    out[kind === 0 ? 'leaks-fixed' : 'corruptions-fixed'] += count;
  }
  // The refcounts first, then the freed clusters' contents (qemu's discards come after its updates).
  const steps: RepairStep[] = [...blocks.values()].map((b) => ({ kind: 'write', pos: b.offset, bytes: b.bytes }));
  steps.push({ kind: 'barrier' });
  for (const [first, end] of freed) {
    const pos = first * cs;
    if (pos < dev.size) steps.push({ kind: 'discard', pos, length: Math.min((end - first) * cs, dev.size - pos), unit: cs });
  }
  steps.push({ kind: 'barrier' });
  return { steps, refcount: (cluster) => (edited.has(cluster) ? edited.get(cluster) : ctx.refcount(cluster)) };
}

/**
 * rebuild_refcount_structure and what qcow2_check_refcounts does after it: the new blocks and
 * table, the header switched to them, the references counted again over the new structure (their
 * lines printed again), then the clusters of the old structure (and of abandoned table
 * placements) freed as leaks.
 */
function planRebuild(image: Image, dev: BlockDevice, counted: CountedImage, out: CheckReport, before: Pick<CheckReport, 'corruptions' | 'leaks'>): RefcountPlan | { refused: string } {
  const { h, refs } = counted;
  const cs = h.clusterSize;
  const bits = 2 ** h.refcountOrder;
  const perBlock = (cs * 8) / bits;
  addLine(out, 'Rebuilding refcount structure');
  const counts = new ClusterCounts(refs.length);
  for (let k = 0; k < refs.length; k++) {
    const v = refs.get(k);
    if (v) counts.set(k, v);
  }
  const built = rebuildRefcounts(counts, cs, perBlock);
  // qemu's overlap check refuses a new block or table over a cluster the old table still names
  // (one it did not count: reserved bits set), then marks the image corrupt. instar refuses first.
  const named = new Set<number>();
  for (let i = 0; i < counted.ctx.stored.tableEntries; i++) {
    const offset = counted.ctx.stored.entryOffset(i);
    if (offset !== 0n) named.add(Number(offset / BigInt(cs)));
  }
  for (let k = 0; k < h.refcountTableClusters; k++) named.add(Number(h.refcountTableOffset / BigInt(cs)) + k);
  const placed = [...built.reftable.filter((b) => b), ...Array.from({ length: built.reftableClusters }, (_, k) => built.reftableCluster + k)];
  if (placed.some((k) => named.has(k))) return refused('its rebuild would write over the old refcount structure, which qemu refuses and then marks the image corrupt');
  if (placed.length * cs > MAX_HELD_BYTES) return refused('its rebuilt refcount structure is too large');

  const structure = (): { pos: number; bytes: Buffer }[] => {
    const writes = built.reftable.flatMap((block, index) => (block ? [{ pos: block * cs, bytes: serializeBlock(counts, index, cs, perBlock, bits) }] : []));
    const table = Buffer.alloc(built.reftableClusters * cs);
    built.reftable.forEach((block, index) => table.writeBigUInt64BE(BigInt(block) * BigInt(cs), index * 8));
    return [...writes, { pos: built.reftableCluster * cs, bytes: table }];
  };
  const header = Buffer.alloc(12);
  header.writeBigUInt64BE(BigInt(built.reftableCluster) * BigInt(cs), 0);
  header.writeUInt32BE(built.reftableClusters, 8);

  // calculate_refcounts again, over the image as the rebuild leaves it.
  const recount = emptyReport();
  let after: CountedImage;
  try {
    after = countReferences(image, new OverlayDevice(dev, [...structure(), { pos: 48, bytes: header }]), recount, { recount: true });
  } catch (e) {
    if (e instanceof CheckFailure) return refused(e.message);
    throw e;
  }
  if (recount['check-errors'] || recount.omitted) return refused('its rebuilt refcount structure cannot be counted');
  for (const l of recount.lines) addLine(out, l);

  // compare_refcounts with BDRV_FIX_LEAKS over the new structure.
  const freed: [number, number][] = [];
  let run: [3, number, number, string, string] | undefined;
  const length = Math.max(counts.length, after.refs.length);
  for (let k = 0; k < length; k++) {
    const stored = counts.get(k);
    const reference = k < after.refs.length ? after.refs.get(k) : 0;
    if (stored === reference) continue;
    if (stored < reference) return refused('its rebuilt refcount structure would still be broken');
    if (run && run[1] + run[2] === k && run[3] === String(stored) && run[4] === String(reference)) run[2]++;
    else {
      if (run) addLine(out, run);
      run = [3, k, 1, String(stored), String(reference)];
    }
    counts.set(k, reference);
    if (reference !== 0) continue;
    const last = freed.at(-1);
    if (last && last[1] === k) last[1]++;
    else freed.push([k, k + 1]);
  }
  if (run) addLine(out, run);
  out.corruptions = recount.corruptions;
  out['corruptions-fixed'] += Math.max(0, before.corruptions - recount.corruptions);
  out['leaks-fixed'] += before.leaks;

  // The new structure (with the leaks already freed: nothing names it until the header does),
  // then the header, then the freed clusters' contents.
  const writes = structure();
  const end = writes.reduce((e, w) => Math.max(e, w.pos + w.bytes.length), dev.size);
  const steps: RepairStep[] = [];
  if (end > dev.size) steps.push({ kind: 'truncate', size: end });
  for (const w of writes) steps.push({ kind: 'write', pos: w.pos, bytes: w.bytes });
  steps.push({ kind: 'barrier' }, { kind: 'write', pos: 48, bytes: header }, { kind: 'barrier' });
  for (const [first, last] of freed) {
    const pos = first * cs;
    if (pos < end) steps.push({ kind: 'discard', pos, length: Math.min((last - first) * cs, end - pos), unit: cs });
  }
  steps.push({ kind: 'barrier' });
  return { steps, refcount: (cluster) => counts.get(cluster), reftable: [BigInt(built.reftableCluster) * BigInt(cs), built.reftableClusters] };
}
