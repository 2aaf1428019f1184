// How the copy is shared between the guests of one convert: each guest opens the sources itself
// and takes its own part, computed from the same image by the same rule, so that the host needs
// no answer from a separate open guest before it starts them (one launch fewer). The parts are
// balanced by the work the copy will do (data to read and write, compressed data to inflate),
// not by virtual offset: a disk whose data sits in its first half would leave one core idle.
// That weighing walks the whole disk's block status in every guest before its first write (~25
// ms on a 2 GiB qcow2); INSTAR_COPY_SHARE=striped (host/convert/open-copy.ts) has the guests take
// interleaved stripes instead (stripedRanges), walking only their own as they copy. -p keeps
// progressShare, whose contiguous parts let the host replay progress in disk order.
import type { Image } from '../../formats/types.ts';
import { MAX_BLOCK_STATUS, runs as blockStatusRuns } from './copy.ts';

const MiB = 1024 * 1024;
/** Below this a second guest costs more than it saves: guest 0 copies everything. */
export const PARALLEL_MIN_BYTES = 256 * MiB;
/** Parts start on this alignment (the I/O buffers never straddle two guests). */
export const SPLIT_ALIGN = 2 * MiB;
/** Longest extent asked for at once while weighing (as the copy loop asks). */
const MAX_EXTENT = MAX_BLOCK_STATUS;
/** Most extents asked for while weighing; beyond it (a huge fragmented disk) the split goes by offset. */
const MAX_WEIGHED = 1 << 16;
/** Relative cost per byte: inflating is about twice a plain read and write; zeros are skipped. */
const WEIGHT = { data: 64, compressed: 128, zero: 1 };

/**
 * Shortest stripe of the striped share: short enough that data bunched anywhere is shared out
 * (a 2 GiB disk is 256 stripes). A layout that repeats every two stripes still lands on one
 * guest: slower, never wrong.
 */
export const STRIPE_MIN = 8 * MiB;
/** Most stripes a disk is cut into: a larger disk gets longer stripes, so that no guest loops over millions of them. */
const MAX_STRIPES = 1 << 16;

/** The stripe length for a disk of `total` bytes: STRIPE_MIN or more, a multiple of SPLIT_ALIGN. */
export function stripeLength(total: number): number {
  return Math.max(STRIPE_MIN, Math.ceil(total / MAX_STRIPES / SPLIT_ALIGN) * SPLIT_ALIGN);
}

/**
 * The striped share: the disk cut into stripes, guest `worker` of `workers` taking every
 * `workers`-th one from its own number on, in disk order. Nothing is walked before the copy
 * starts (each guest walks only its own stripes' block status, as it copies them), and data
 * bunched anywhere lands on every guest alike. Below PARALLEL_MIN_BYTES guest 0 takes it all.
 */
export function stripedRanges(total: number, worker: number, workers: number): [number, number][] {
  const n = total >= PARALLEL_MIN_BYTES ? workers : 1;
  if (worker >= n) return [];
  if (n === 1) return total > 0 ? [[0, total]] : [];
  const stripe = stripeLength(total);
  const out: [number, number][] = [];
  for (let start = worker * stripe; start < total; start += n * stripe) out.push([start, Math.min(total, start + stripe)]);
  return out;
}

/** [start, end) of the concatenated disk that guest `worker` of `workers` copies, split by offset. */
export function workerRange(total: number, worker: number, workers: number): [number, number] {
  const n = total >= PARALLEL_MIN_BYTES ? workers : 1;
  if (worker >= n) return [0, 0];
  const step = Math.ceil(total / n / SPLIT_ALIGN) * SPLIT_ALIGN;
  return [Math.min(total, worker * step), Math.min(total, (worker + 1) * step)];
}

/** A run of the concatenated disk, as the weighing walk found it: data to copy, or zeros. */
export interface DiskRun {
  start: number;
  length: number;
  data: boolean;
}

/** A guest's part: its range, and (when the disk was weighed) the disk's runs, so the copy need not walk them again. */
export interface Share {
  range: [number, number];
  runs?: readonly DiskRun[];
}

/** As workerRange, with the boundaries moved so that every part has about the same work. */
export function balancedShare(images: Image[], worker: number, workers: number): Share {
  const total = images.reduce((n, i) => n + i.virtualSize, 0);
  const n = total >= PARALLEL_MIN_BYTES ? workers : 1;
  if (n <= 1) return { range: workerRange(total, worker, workers) };
  let weighed: { bounds: number[]; runs: Run[] } | undefined;
  try {
    weighed = weigh(images, total, n);
  } catch {
    // A broken extent: the copy meets it too and reports it as qemu would, where qemu would.
  }
  if (!weighed) return { range: workerRange(total, worker, workers) };
  const range: [number, number] = worker >= n ? [0, 0] : [weighed.bounds[worker], weighed.bounds[worker + 1]];
  return { range, runs: weighed.runs.map((r) => ({ start: r.start, length: r.length, data: r.perByte !== WEIGHT.zero })) };
}

/**
 * With -p: as balancedShare, but every part starts where one of qemu's block-status runs starts.
 * qemu cuts its progress chunks (2 MiB) from each run's start; a part starting inside a run would
 * cut them elsewhere and print other lines. Runs are up to 2 GiB, so the balance is coarser; a
 * disk whose runs cannot be walked cheaply is copied by one guest.
 */
export function progressShare(images: Image[], worker: number, workers: number): Share {
  const total = images.reduce((n, i) => n + i.virtualSize, 0);
  const n = total >= PARALLEL_MIN_BYTES ? workers : 1;
  const alone: Share = { range: worker === 0 ? [0, total] : [0, 0] };
  if (n <= 1) return alone;
  const ends: [number, number][] = [];
  let sum = 0;
  let base = 0;
  try {
    for (const image of images) {
      for (const r of blockStatusRuns(image, 0, image.virtualSize)) {
        if (ends.length >= MAX_WEIGHED) return alone;
        sum += r.length * (r.data ? WEIGHT.data : WEIGHT.zero);
        ends.push([base + r.pos + r.length, sum]);
      }
      base += image.virtualSize;
    }
  } catch {
    // A broken extent: the copy meets it too and reports it as qemu would, where qemu would.
    return alone;
  }
  const bounds = [0];
  for (let k = 1; k < n; k++) {
    const goal = (sum * k) / n;
    const end = ends.find(([, weight]) => weight >= goal)?.[0] ?? total;
    bounds.push(Math.max(bounds[k - 1], Math.min(end, total)));
  }
  bounds.push(total);
  return { range: worker >= n ? [0, 0] : [bounds[worker], bounds[worker + 1]] };
}

/** balancedShare's range alone. */
export function balancedRange(images: Image[], worker: number, workers: number): [number, number] {
  return balancedShare(images, worker, workers).range;
}

interface Run {
  start: number;
  length: number;
  perByte: number;
}

/**
 * The disk's runs and n + 1 aligned, non-decreasing boundaries from 0 to total; undefined when
 * weighing would cost too much.
 */
function weigh(images: Image[], total: number, n: number): { bounds: number[]; runs: Run[] } | undefined {
  const runs: Run[] = [];
  let calls = 0;
  let sum = 0;
  let base = 0;
  for (const image of images) {
    for (let pos = 0; pos < image.virtualSize; ) {
      if (++calls > MAX_WEIGHED) return undefined;
      const e = image.extent(pos, Math.min(image.virtualSize - pos, MAX_EXTENT));
      // A driver that reports nothing is a broken image: the copy itself reports it.
      if (!(e.length > 0)) return undefined;
      const length = Math.min(e.length, image.virtualSize - pos);
      const perByte = e.kind !== 'data' || e.zeroData ? WEIGHT.zero : e.compressed ? WEIGHT.compressed : WEIGHT.data;
      const last = runs[runs.length - 1];
      if (last && last.perByte === perByte && last.start + last.length === base + pos) last.length += length;
      else runs.push({ start: base + pos, length, perByte });
      sum += length * perByte;
      pos += length;
    }
    base += image.virtualSize;
  }
  const bounds = [0];
  let done = 0;
  let i = 0;
  for (let k = 1; k < n; k++) {
    const goal = (sum * k) / n;
    for (; i < runs.length; i++) {
      const weight = runs[i].length * runs[i].perByte;
      if (done + weight >= goal) break;
      done += weight;
    }
    const at = i < runs.length ? runs[i].start + (goal - done) / runs[i].perByte : total;
    const aligned = Math.min(total, Math.round(at / SPLIT_ALIGN) * SPLIT_ALIGN);
    bounds.push(Math.max(bounds[k - 1], aligned));
  }
  bounds.push(total);
  return { bounds, runs };
}
