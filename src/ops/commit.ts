// The guest half of `commit`: copies what the images above the base allocate into the base, then
// empties the top as qemu's bdrv_make_empty does (unless -d). The host granted the base (and only
// it) writable: the base is the writable backing device of the chain. qemu copies through a
// mirror job in units of the base's bitmap granularity; instar copies the same units in ascending
// order. Everything is planned (and refused, with nothing written) before the first write.
import { ImageError, type Image } from '../formats/types.ts';
import { applyRepair, writeCount, type RepairStep } from '../formats/repair.ts';
import { parseHeader } from '../formats/qcow2/header.ts';
import { planInPlaceWrite, type ClusterRun } from '../formats/qcow2/inplace-write.ts';
import { makeEmptyRefusal, planMakeEmpty } from '../formats/qcow2/make-empty.ts';
import { PlanRefusal } from '../formats/qcow2/refcount-update.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { OpContext } from './types.ts';

export interface CommitOptions extends OpenTreeOptions {
  /** -d: the top image keeps its data. */
  drop?: boolean;
  /** Tests only: stop after this many writes in all (crash simulation). */
  stopAfterWrites?: number;
}

export type CommitResult = { format: string } & (
  | { committed: true }
  /** The top has no backing file. */
  | { noBacking: true }
  /** No image of the chain was granted writable: -b named none of them. */
  | { noBase: true }
  /** instar will not do this (qemu would): nothing was written. */
  | { refused: string });

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

export function commitOp(options: Record<string, unknown>, ctx: OpContext): CommitResult {
  const opts = options as unknown as CommitOptions;
  const top = openTree(ctx, 0, opts);
  const format = top.format;
  const chain = chainIndexes(ctx);
  if (chain.length < 2) return { format, noBacking: true };
  const baseLevel = chain.findIndex((i, level) => level > 0 && ctx.devices[i].spec.writable);
  if (baseLevel < 0) return { format, noBase: true };
  // The base as the chain opened it: its format is what the image above names (or detection).
  let above = top;
  for (let level = 1; level < baseLevel; level++) above = openTree(ctx, chain[level], { ...opts, fileName: undefined, format: above.info()['backing-filename-format'] });
  const base = openTree(ctx, chain[baseLevel], { ...opts, fileName: undefined, format: above.info()['backing-filename-format'], noBacking: true });
  const baseDev = ctx.devices[chain[baseLevel]].dev;
  const topDev = ctx.devices[0].dev;
  try {
    if (base.virtualSize < top.virtualSize) {
      return { format, refused: 'instar cannot commit into a base smaller than the top image (qemu would grow it); nothing was written' };
    }
    let baseSteps: RepairStep[];
    if (base.format === 'qcow2') {
      const cs = parseHeader(baseDev).clusterSize;
      const unit = Math.max(granularityOf(cs), cs);
      const runs = clusterRuns(top, dirtyRanges(top, baseLevel, unit), unit);
      baseSteps = planInPlaceWrite(baseDev, runs, (buf, at) => top.read(buf, at), { hasBacking: base.info()['backing-filename'] !== undefined });
    } else if (base.format === 'raw') {
      const unit = granularityOf(undefined);
      baseSteps = rawSteps(base.virtualSize, clusterRuns(top, dirtyRanges(top, baseLevel, unit), unit), top);
    } else {
      return { format, refused: `instar cannot write into a ${base.format} base image yet; nothing was written` };
    }
    let topSteps: RepairStep[] = [];
    if (!opts.drop && format === 'qcow2') {
      const why = makeEmptyRefusal(topDev);
      if (why) return { format, refused: `instar cannot empty this qcow2 image (${why}); nothing was written (use -d to keep its data)` };
      topSteps = planMakeEmpty(topDev);
    } else if (!opts.drop && format === 'qcow') {
      return { format, refused: 'instar cannot empty a qcow image; nothing was written (use -d to keep its data)' };
    }
    if (topSteps.length > 0 && !ctx.devices[0].spec.writable) throw new ImageError('the image was not opened for writing');
    // Other drivers have no make_empty: qemu-img ignores its ENOTSUP and leaves the top as it is.
    const stop = typeof opts.stopAfterWrites === 'number' ? opts.stopAfterWrites : Infinity;
    applyRepair(baseDev, baseSteps, { stopAfterWrites: stop });
    const left = stop - writeCount(baseSteps);
    if (left > 0 && topSteps.length > 0) applyRepair(topDev, topSteps, { stopAfterWrites: left });
    return { format, committed: true };
  } catch (e) {
    if (e instanceof PlanRefusal) return { format, refused: e.message };
    throw e;
  }
}
