// bench -w on a qcow2 image where the requests reach clusters that are not allocated (the usual
// `qemu-img bench -w new.qcow2`): qemu's driver allocates each such cluster when the first
// request reaches it, copying the rest of the cluster from below (the backing file, or zeros).
// Its coroutines take the allocation lock in the order the requests were sent, so clusters are
// allocated in first-touch order. Here that order is planned with the in-place writer
// (formats/qcow2/inplace-write.ts) and applied in crash-safe steps; the clusters' bytes are what
// the image read before with the pattern over every written range. A run of first touches that
// goes back to a lower cluster (requests wrapping past the disk's end) is planned and applied
// after the part before it, so each part allocates from where the last one ended, as qemu does.
import type { Image } from '../formats/types.ts';
import type { DiscardingDevice } from '../formats/repair.ts';
import { applyRepair, writeCount } from '../formats/repair.ts';
import { planInPlaceWrite, type ClusterRun } from '../formats/qcow2/inplace-write.ts';

/** Disjoint, ascending [start, end) ranges; `add` answers the parts of a range not yet covered. */
class RangeSet {
  readonly starts: number[] = [];
  readonly ends: number[] = [];

  add(start: number, end: number): [number, number][] {
    const fresh: [number, number][] = [];
    const lo = this.firstEndingAfter(start);
    let at = start;
    let i = lo;
    while (at < end && i < this.starts.length && this.starts[i] < end) {
      if (this.starts[i] > at) fresh.push([at, this.starts[i]]);
      at = Math.max(at, this.ends[i]);
      i++;
    }
    if (at < end) fresh.push([at, end]);
    // Merge [start, end) with the ranges it touches: lo .. i-1, and neighbours that abut.
    let first = lo;
    if (first > 0 && this.ends[first - 1] === start) first--;
    let last = i;
    if (last < this.starts.length && this.starts[last] === end) last++;
    // first <= last: the ranges first .. last-1 (none when equal) become the merged one.
    const mergedStart = first < last ? Math.min(start, this.starts[first]) : start;
    const mergedEnd = first < last ? Math.max(end, this.ends[last - 1]) : end;
    this.starts.splice(first, last - first, mergedStart);
    this.ends.splice(first, last - first, mergedEnd);
    return fresh;
  }

  /** The index of the first range that ends after `pos`. */
  firstEndingAfter(pos: number): number {
    let lo = 0;
    let hi = this.ends.length;
    // Requests in ascending order land past the last range: no search then.
    if (hi > 0 && this.ends[hi - 1] <= pos) return hi;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ends[mid] <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/**
 * Writes `pattern` over each request's [at, at + bufsize) of a qcow2 image, allocating clusters
 * in qemu's order; answers how many writes it applied. Throws PlanRefusal (from the planner)
 * before the first write of a part that instar cannot write; parts already applied stay applied
 * (each leaves a consistent image).
 */
export function writeAllocating(image: Image, dev: DiscardingDevice, clusterSize: number, requests: readonly number[], bufsize: number, pattern: number, stopAfterWrites = Infinity): number {
  const size = image.virtualSize;
  const written = new RangeSet();
  const touched = new RangeSet();
  /** Cluster runs in first-touch order, split where the order goes back to a lower cluster. */
  const parts: ClusterRun[][] = [[]];
  for (const at of requests) {
    const end = Math.min(at + bufsize, size);
    if (end <= at) continue;
    written.add(at, end);
    const from = Math.floor(at / clusterSize) * clusterSize;
    const to = Math.min(Math.ceil(end / clusterSize) * clusterSize, Math.ceil(size / clusterSize) * clusterSize);
    for (const [s, e] of touched.add(from, to)) {
      let part = parts[parts.length - 1];
      const prev = part[part.length - 1];
      if (prev && prev.offset >= s) parts.push((part = []));
      part.push({ offset: s, length: e - s, zero: false });
    }
  }
  // Guest bytes: what the image reads now (backing file or zeros where unallocated), the pattern
  // over every written range. Read before any part is applied: the planner reads them as it fills.
  const source = (buf: Uint8Array, offset: number): void => {
    image.read(buf, offset);
    const end = offset + buf.length;
    for (let i = written.firstEndingAfter(offset); i < written.starts.length && written.starts[i] < end; i++) {
      buf.fill(pattern, Math.max(written.starts[i], offset) - offset, Math.min(written.ends[i], end) - offset);
    }
  };
  let applied = 0;
  for (const runs of parts) {
    if (runs.length === 0) continue;
    const steps = planInPlaceWrite(dev, runs, source, { hasBacking: image.info()['backing-filename'] !== undefined });
    // Tests: stop after this many writes, as if the process died there.
    applyRepair(dev, steps, { stopAfterWrites: stopAfterWrites - applied });
    applied = Math.min(stopAfterWrites, applied + writeCount(steps));
    if (applied >= stopAfterWrites) break;
  }
  return applied;
}
