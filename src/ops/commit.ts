// The guest half of `commit`: copies what the images above the base allocate into the base, then
// empties the top as qemu's bdrv_make_empty does (unless -d). The host granted the base (and only
// it) writable: the base is the writable backing device of the chain. qemu copies through a
// mirror job in units of the base's bitmap granularity; instar copies the same units in ascending
// order. Everything is planned (and refused, with nothing written) before the first write.
import { ImageError, type BlockDevice, type Image, type ResizeRequest } from '../formats/types.ts';
import { Qcow2Image } from '../formats/qcow2/driver.ts';
import { VmdkImage } from '../formats/vmdk/image.ts';
import { ParentCidMismatch, vmdkInPlaceWriter } from '../formats/vmdk/inplace.ts';
import { plainInPlaceWriter } from './in-place-writers.ts';
import type { InPlaceTarget } from './convert/in-place-copy.ts';
import { findDriver } from '../formats/registry.ts';
import { isRawFile } from '../formats/file/driver.ts';
import { applyRepair, writeCount, type RepairStep } from '../formats/repair.ts';
import { ReplayedDevice } from '../formats/replayed-device.ts';
import { AUTOCLEAR, parseHeader } from '../formats/qcow2/header.ts';
import { planInPlaceWrite, type ClusterRun, type GuestSource } from '../formats/qcow2/inplace-write.ts';
import { aroundBitmaps, openWritesBitmaps } from '../formats/qcow2/bitmap-session.ts';
import { grownWithBitmaps, inPlaceWithBitmaps, type SessionOptions } from '../formats/qcow2/inplace-bitmaps.ts';
import { emptiesCompletely, makeEmptyRefusal, planMakeEmpty } from '../formats/qcow2/make-empty.ts';
import { discardAllRefusal, planDiscardAll } from '../formats/qcow2/make-empty-discard.ts';
import { PlanRefusal } from '../formats/qcow2/refcount-update.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { OpContext } from './types.ts';
import { commitProgress, mirrorOps, type TargetShape } from './commit-progress.ts';
import { STREAM_OPTIMIZED_REWRITE } from './commit-messages.ts';

export interface CommitOptions extends OpenTreeOptions {
  /** -d: the top image keeps its data. */
  drop?: boolean;
  /** Tests only: stop after this many writes in all (crash simulation). */
  stopAfterWrites?: number;
}

export type CommitResult = { format: string } & (
  /** progress: what `-p` shows between 0% and 100% (commit-progress.ts). */
  | { committed: true; progress: number[] }
  /** The top has no backing file. */
  | { noBacking: true }
  /** No image of the chain was granted writable: -b named none of them. */
  | { noBase: true }
  /** instar will not do this (qemu would): nothing was written. */
  | { refused: string }
  /** The base is smaller and its format cannot grow in qemu: its job fails before any write. */
  | { truncateUnsupported: true }
  /** The base's format (qemu's parallels driver) cannot be reopened for writing: the job does not start. */
  | { reopenUnsupported: string }
  /**
   * Writes of the job failed with qemu's driver's words, printed once for each of `times`
   * operations (before "Block job failed: Input/output error").
   */
  | { writeFailed: typeof STREAM_OPTIMIZED_REWRITE; times: number }
  /**
   * A vmdk base whose parent's CID is not its parentCID: the job's first allocating write failed
   * (EINVAL), after the writes before it; `progress` is what -p showed until then.
   */
  | { parentCidMismatch: true; progress: number[] });

/** MAX_IN_FLIGHT: the most mirror operations that can fail before the job sees the first failure. */
const MAX_IN_FLIGHT = 16;

/** Whether [offset, end) holds a grain the streamOptimized base itself holds (not its parent's). */
function holdsGrain(base: VmdkImage, offset: number, end: number): boolean {
  for (let at = offset; at < Math.min(end, base.virtualSize);) {
    const e = base.extent(at, Math.min(end, base.virtualSize) - at);
    if (e.depth === 0 && e.kind === 'data') return true;
    at += Math.max(e.length, 1);
  }
  return false;
}

/**
 * How many of the mirror's operations write onto grains the base holds, as many as can be in
 * flight at most: each prints qemu's words. (qemu issues the next ones while the first run, so
 * how many fail before the job stops depends on its timing: this is the count when all of them
 * were issued first.)
 */
function rewritingOps(top: Image, base: VmdkImage, baseLevel: number, unit: number): number {
  const ops = mirrorOps(top, dirtyRanges(top, baseLevel, unit), unit, { zeroClusters: false });
  return Math.min(MAX_IN_FLIGHT, ops.filter((op) => holdsGrain(base, op.offset, op.offset + op.bytes)).length);
}

/** Device indexes of the chain from the top down (role 'backing' links). */
function chainIndexes(ctx: OpContext): number[] {
  const chain = [0];
  for (;;) {
    const last = chain[chain.length - 1];
    const next = ctx.devices.findIndex((d) => d.spec.referrer === last && d.spec.role === 'backing');
    if (next < 0 || chain.includes(next)) return chain;
    chain.push(next);
  }
}

/** qemu's default bitmap granularity for the base: its cluster size within 4 KiB..64 KiB. */
const granularityOf = (clusterSize: number | undefined): number => (clusterSize === undefined ? 65536 : Math.min(65536, Math.max(4096, clusterSize)));

/** Byte ranges (unit aligned) some image above the base allocates, merged. */
function dirtyRanges(top: Image, baseLevel: number, unit: number): [number, number][] {
  const ranges: [number, number][] = [];
  for (let offset = 0; offset < top.virtualSize;) {
    const e = top.extent(offset, top.virtualSize - offset);
    if (!(e.length > 0)) throw new ImageError('the image reported an empty extent');
    if (e.kind !== 'unallocated' && e.depth < baseLevel) {
      const start = Math.floor(offset / unit) * unit;
      const end = Math.min(Math.ceil((offset + e.length) / unit) * unit, Math.ceil(top.virtualSize / unit) * unit);
      const last = ranges[ranges.length - 1];
      if (last && last[1] >= start) last[1] = Math.max(last[1], end);
      else ranges.push([start, end]);
    }
    offset += e.length;
  }
  return ranges;
}

/**
 * The mirror's progress over the chunks of its dirty bitmap (granularity `unit`); with `failedAt`,
 * what it shows until the operation that writes that byte fails.
 */
function progressOf(top: Image, baseLevel: number, unit: number, target: TargetShape, failedAt?: number): number[] {
  const dirty = dirtyRanges(top, baseLevel, unit);
  const dirtyBytes = dirty.reduce((sum, [start, end]) => sum + end - start, 0);
  let ops = mirrorOps(top, dirty, unit, target);
  if (failedAt !== undefined) ops = ops.slice(0, ops.findIndex((op) => op.offset + op.bytes > failedAt) + 1 || ops.length);
  return commitProgress(ops, dirtyBytes, target);
}

/** Whether [offset, offset + length) reads as zeros without data (qemu's mirror writes zeros there). */
function readsZero(top: Image, offset: number, length: number): boolean {
  const end = Math.min(offset + length, top.virtualSize);
  for (let at = offset; at < end;) {
    const e = top.extent(at, end - at);
    if (e.kind === 'data' || !(e.length > 0)) return false;
    at += e.length;
  }
  return true;
}

/** The dirty ranges cut into units, consecutive units of the same kind joined. */
function clusterRuns(top: Image, ranges: [number, number][], unit: number): ClusterRun[] {
  const runs: ClusterRun[] = [];
  for (const [start, end] of ranges) {
    for (let at = start; at < end; at += unit) {
      const zero = readsZero(top, at, unit);
      const last = runs[runs.length - 1];
      if (last && last.offset + last.length === at && last.zero === zero) last.length += unit;
      else runs.push({ offset: at, length: unit, zero });
    }
  }
  return runs;
}

/** A raw base: the bytes themselves (zeros written as zeros). */
function rawSteps(size: number, runs: ClusterRun[], top: Image): RepairStep[] {
  const steps: RepairStep[] = [];
  const chunk = 1024 * 1024;
  for (const run of runs) {
    const end = Math.min(run.offset + run.length, size);
    for (let at = run.offset; at < end; at += chunk) {
      const length = Math.min(chunk, end - at);
      const virt = at;
      steps.push(run.zero ? { kind: 'zero', pos: at, length } : { kind: 'fill', pos: at, length, fill: (buf) => top.read(buf, virt) });
    }
  }
  steps.push({ kind: 'barrier' });
  return steps;
}

/** qcow2_co_truncate's failures with ENOTSUP, which the commit job reports as 'Operation not supported'. */
const TRUNCATE_NOT_SUPPORTED = new Set(["Can't resize a v2 image which has snapshots", 'Failed to zero out new clusters: Operation not supported']);

/** Formats whose qemu drivers cannot truncate (measured: the commit job fails growing them). */
const NO_TRUNCATE = new Set(['vhdx', 'vpc', 'vmdk', 'vdi', 'qcow']);

/** The vmdk base's writer; refused where the host did not grant its extent files for writing (it grants a base's own: host/commands/commit.ts). */
function vmdkWriter(dev: BlockDevice, image: VmdkImage): ReturnType<typeof vmdkInPlaceWriter> {
  try {
    return vmdkInPlaceWriter(dev, image);
  } catch (e) {
    if (e instanceof ImageError) return { refused: 'instar cannot write into a vmdk base whose extents are files of their own yet; nothing was written' };
    throw e;
  }
}

/** The runs written through a format's own in-place writer (zero runs as its zero writes, or zeros). */
function writeThrough(target: InPlaceTarget, runs: ClusterRun[], top: Image): void {
  const chunk = 1024 * 1024;
  for (const run of runs) {
    const end = Math.min(run.offset + run.length, top.virtualSize);
    for (let at = run.offset; at < end; at += chunk) {
      const length = Math.min(chunk, end - at);
      if (run.zero && target.writeZeroes) {
        target.writeZeroes(at, length);
        continue;
      }
      const buf = new Uint8Array(length);
      if (!run.zero) top.read(buf, at);
      target.write(buf, at);
    }
  }
  target.finish();
}

/**
 * The steps that grow the base to `size` as qemu's blk_truncate does (raw: the file's length;
 * qcow2: its resize planner), or instar's refusal. A base with a backing file of its own has the
 * new area zeroed where that file would show through (qemu's block layer), as resize does:
 * `chained` opens the base with its backing chain for that.
 */
function growBase(base: Image, dev: BlockDevice, size: number, chained: () => Image): { steps: RepairStep[] } | { refused: string } {
  if (isRawFile(base.format)) return { steps: [{ kind: 'truncate', size }] };
  const resize = findDriver(base.format)?.resize;
  const cannot = { refused: `instar cannot grow this ${base.format} base to the top image's size (qemu would); nothing was written` };
  if (!resize) return cannot;
  const request: ResizeRequest = { newSize: size, preallocation: 'off' };
  if (base.info()['backing-filename'] !== undefined) {
    const whole = chained();
    if (!(whole instanceof Qcow2Image) || whole.backingSize === undefined) return cannot;
    request.backingSize = whole.backingSize;
    request.readGuest = (buf, at) => whole.read(buf, at);
  }
  const plan = resize.plan(base, dev, request);
  return 'error' in plan ? { refused: plan.error } : plan;
}

/**
 * qemu-img opened the top for writing before it found no base: the close of a qcow2 top stores its
 * persistent bitmaps anew (the open marked them in use), as after any writable open.
 */
function closedAfterFailure(ctx: OpContext, format: string, result: CommitResult): CommitResult {
  const dev = ctx.devices[0].dev;
  if (format !== 'qcow2' || !openWritesBitmaps(dev)) return result;
  if (!ctx.devices[0].spec.writable) throw new ImageError('the image was not opened for writing');
  try {
    applyRepair(dev, aroundBitmaps(dev, () => ({ steps: [] })).steps);
  } catch (e) {
    if (e instanceof PlanRefusal) return { format, refused: e.message };
    throw e;
  }
  return result;
}

export function commitOp(options: Record<string, unknown>, ctx: OpContext): CommitResult {
  const opts = options as unknown as CommitOptions;
  const top = openTree(ctx, 0, opts);
  const format = top.format;
  const chain = chainIndexes(ctx);
  if (chain.length < 2) return closedAfterFailure(ctx, format, { format, noBacking: true });
  const baseLevel = chain.findIndex((i, level) => level > 0 && ctx.devices[i].spec.writable);
  if (baseLevel < 0) return closedAfterFailure(ctx, format, { format, noBase: true });
  // The base as the chain opened it: its format is what the image above names (or detection).
  let above = top;
  for (let level = 1; level < baseLevel; level++) above = openTree(ctx, chain[level], { ...opts, fileName: undefined, format: above.info()['backing-filename-format'] });
  const base = openTree(ctx, chain[baseLevel], { ...opts, fileName: undefined, format: above.info()['backing-filename-format'], noBacking: true });
  // qemu's commit job reopens the base read-write before anything else; this driver has no reopen.
  if (base.format === 'parallels') return closedAfterFailure(ctx, format, { format, reopenUnsupported: base.format });
  const baseDev = ctx.devices[chain[baseLevel]].dev;
  const topDev = ctx.devices[0].dev;
  try {
    // qemu's commit job first grows a smaller base to the top's size.
    const chained = () => openTree(ctx, chain[baseLevel], { ...opts, fileName: undefined, format: above.info()['backing-filename-format'] });
    // The job fails growing the base; qemu's close of the top still stores its bitmaps anew.
    if (base.virtualSize < top.virtualSize && NO_TRUNCATE.has(base.format)) return closedAfterFailure(ctx, format, { format, truncateUnsupported: true });
    const grow = base.virtualSize < top.virtualSize ? growBase(base, baseDev, top.virtualSize, chained) : { steps: [] };
    // qemu's truncate refuses with ENOTSUP (a v2 qcow2 with snapshots): its job fails as where the driver cannot truncate.
    if ('refused' in grow && TRUNCATE_NOT_SUPPORTED.has(grow.refused)) return closedAfterFailure(ctx, format, { format, truncateUnsupported: true });
    if ('refused' in grow) return { format, refused: grow.refused };
    const hasBacking = base.info()['backing-filename'] !== undefined;
    let baseSteps: RepairStep[];
    let writeBase: (() => void) | undefined;
    /** What -p showed when the write at a byte failed (a vmdk base's ParentCidMismatch). */
    let progressUntil: ((failedAt: number) => number[]) | undefined;
    let progress: number[] = [];
    // vdi, vpc, vhdx, qed, qcow: their writer (undefined, without reading anything, for the others).
    const plain = plainInPlaceWriter(base, baseDev);
    if (base.format === 'qcow2') {
      // The planner sees the base as the growth leaves it.
      const planDev = grow.steps.length > 0 ? new ReplayedDevice(baseDev, grow.steps) : baseDev;
      const cs = parseHeader(planDev).clusterSize;
      const unit = Math.max(granularityOf(cs), cs);
      progress = progressOf(top, baseLevel, granularityOf(cs), { clusterSize: cs, zeroClusters: parseHeader(planDev).version >= 3 });
      const runs = clusterRuns(top, dirtyRanges(top, baseLevel, unit), unit);
      const source: GuestSource = (buf, at) => top.read(buf, at);
      // Only a base with bitmaps: qemu reopens the base for writing, which keeps a stale extension.
      if (parseHeader(baseDev).autoclear & AUTOCLEAR.bitmaps) {
        // qemu's reopen for writing marks them in use; the copy's writes are recorded by the enabled
        // ones; a growth runs inside the same open (the bitmaps grow with the base).
        const dirtied = runs.map((r): [number, number] => [r.offset, Math.min(r.offset + r.length, top.virtualSize)]);
        const write = (opened: BlockDevice, more: SessionOptions) => planInPlaceWrite(opened, runs, source, { hasBacking, unmap: parseHeader(opened).version >= 3, ...more });
        baseSteps = grow.steps.length > 0 ? grownWithBitmaps(baseDev, top.virtualSize, write, dirtied) : inPlaceWithBitmaps(baseDev, write, dirtied);
      } else {
        // qemu's commit is a mirror job with unmap: the top's zero runs become zero clusters of a
        // version 3 base, its data clusters there freed (and discarded).
        const unmap = parseHeader(planDev).version >= 3;
        baseSteps = [...grow.steps, ...planInPlaceWrite(planDev, runs, source, { hasBacking, unmap })];
      }
    } else if (isRawFile(base.format)) {
      const unit = granularityOf(undefined);
      progress = progressOf(top, baseLevel, unit, { zeroClusters: false });
      baseSteps = [...grow.steps, ...rawSteps(top.virtualSize, clusterRuns(top, dirtyRanges(top, baseLevel, unit), unit), top)];
    } else if (base.format === 'vmdk') {
      // qemu's mirror writes through the vmdk driver: a new grain starts from the base's parent
      // (get_whole_cluster), the descriptor gets a new random CID at the first write. The writer
      // writes directly (not in steps), after every refusal below.
      const whole = chained();
      if (whole instanceof VmdkImage && whole.state.createType === 'streamOptimized') {
        // Its grains are written once: a copy onto one it holds fails the job (qemu may have
        // written other grains before that, in an order its timing decides; instar writes none).
        const times = rewritingOps(top, whole, baseLevel, granularityOf(whole.info()['cluster-size'] as number | undefined));
        if (times > 0) return closedAfterFailure(ctx, format, { format, writeFailed: STREAM_OPTIMIZED_REWRITE, times });
      }
      const writer = whole instanceof VmdkImage ? vmdkWriter(baseDev, whole) : { refused: 'instar cannot write into this vmdk base image; nothing was written' };
      if ('refused' in writer) return { format, refused: writer.refused.replace('convert into', 'commit into') };
      const unit = granularityOf((writer as { grainBytes?: number }).grainBytes);
      progress = progressOf(top, baseLevel, unit, { zeroClusters: false });
      const runs = clusterRuns(top, dirtyRanges(top, baseLevel, unit), unit);
      baseSteps = [];
      writeBase = () => writeThrough(writer, runs, top);
      progressUntil = (failedAt) => progressOf(top, baseLevel, unit, { zeroClusters: false }, failedAt);
    } else if (plain) {
      // The formats convert -n writes into: qemu's mirror writes through their drivers in the
      // same way (blocks allocated at the end of the file as the writes reach them).
      const writer = plain;
      if ('refused' in writer) return { format, refused: writer.refused.replace('convert into', 'commit into') };
      const unit = granularityOf(base.info()['cluster-size'] as number | undefined);
      progress = progressOf(top, baseLevel, unit, { zeroClusters: false });
      const runs = clusterRuns(top, dirtyRanges(top, baseLevel, unit), unit);
      baseSteps = [];
      writeBase = () => writeThrough(writer, runs, top);
    } else {
      return { format, refused: `instar cannot write into a ${base.format} base image yet; nothing was written` };
    }
    let topSteps: RepairStep[] = [];
    if (!opts.drop && format === 'qcow2') {
      // Where qemu cannot reset the image (bitmaps, version 2) it discards every cluster instead.
      const complete = emptiesCompletely(topDev);
      const why = complete ? makeEmptyRefusal(topDev) : discardAllRefusal(topDev);
      if (why) return { format, refused: `instar cannot empty this qcow2 image (${why}); nothing was written (use -d to keep its data)` };
      const empty = complete ? planMakeEmpty : planDiscardAll;
      // A stale bitmaps extension: qemu's writable open of the top drops it first.
      topSteps = openWritesBitmaps(topDev) ? aroundBitmaps(topDev, (opened) => ({ steps: empty(opened) })).steps : empty(topDev);
    } else if (format === 'qcow2' && openWritesBitmaps(topDev)) {
      // -d: the top is still opened for writing, and closed (its bitmaps stored anew).
      topSteps = aroundBitmaps(topDev, () => ({ steps: [] })).steps;
    } else if (!opts.drop && format === 'qcow') {
      return { format, refused: 'instar cannot empty a qcow image; nothing was written (use -d to keep its data)' };
    }
    if (topSteps.length > 0 && !ctx.devices[0].spec.writable) throw new ImageError('the image was not opened for writing');
    // Other drivers have no make_empty: qemu-img ignores its ENOTSUP and leaves the top as it is.
    const stop = typeof opts.stopAfterWrites === 'number' ? opts.stopAfterWrites : Infinity;
    try {
      writeBase?.();
    } catch (e) {
      // qemu's mirror writes the base through its driver in the order it starts its operations
      // (the driver's lock): those before the failing one landed, as here. Those it started
      // after it may land too (their grains allocated already): instar stops.
      if (e instanceof ParentCidMismatch && progressUntil) return closedAfterFailure(ctx, format, { format, parentCidMismatch: true, progress: progressUntil(e.offset) });
      throw e;
    }
    applyRepair(baseDev, baseSteps, { stopAfterWrites: stop });
    const left = stop - writeCount(baseSteps);
    if (left > 0 && topSteps.length > 0) applyRepair(topDev, topSteps, { stopAfterWrites: left });
    return { format, committed: true, progress };
  } catch (e) {
    if (e instanceof PlanRefusal) return { format, refused: e.message };
    throw e;
  }
}
