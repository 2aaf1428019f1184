// convert -n --target-is-zero into an existing qcow2: qemu skips every stretch the sources read
// as zeros, so a cluster a data request covers in part keeps the target's own bytes in the rest
// (written in place when allocated; copy-on-write from the target's view otherwise). The fill
// steps write whole clusters, so those bytes are read here, before any write, and laid over what
// the sources give. Only pieces that are not all zeros are held (the sources read zeros there).
import { PlanRefusal } from '../../formats/qcow2/refcount-update.ts';

/** Most bytes held for the parts of clusters the copy keeps. */
const MAX_KEPT = 64 * 1024 * 1024;

interface Piece {
  offset: number;
  bytes: Uint8Array;
}

/** The target's bytes where the copy writes a cluster in part and leaves the rest. */
export class KeptBytes {
  private readonly byCluster = new Map<number, Piece[]>();

  /**
   * `requests`: the data requests [offset, end) below `disk`; `readTarget`: the target's view
   * as it is before the copy.
   */
  constructor(requests: readonly { offset: number; length: number }[], disk: number, private readonly cs: number, readTarget: (buf: Uint8Array, offset: number) => void) {
    const covered = merged(requests.map((r): [number, number] => [r.offset, Math.min(r.offset + r.length, disk)]));
    const seen = new Set<number>();
    let held = 0;
    for (const [start, end] of covered) {
      for (const c of [Math.floor(start / cs), Math.floor((end - 1) / cs)]) {
        if (seen.has(c)) continue;
        seen.add(c);
        for (const [from, to] of uncovered(covered, c * cs, Math.min((c + 1) * cs, disk))) {
          const bytes = new Uint8Array(to - from);
          readTarget(bytes, from);
          if (bytes.every((b) => b === 0)) continue;
          held += bytes.length;
          if (held > MAX_KEPT) throw new PlanRefusal('instar cannot convert into this qcow2 image (--target-is-zero, and the clusters the copy writes in part hold too much data to keep); nothing was written');
          const list = this.byCluster.get(c) ?? [];
          list.push({ offset: from, bytes });
          this.byCluster.set(c, list);
        }
      }
    }
  }

  /** Lays the kept bytes over `buf` (guest bytes from virtual `at`). */
  overlay(buf: Uint8Array, at: number): void {
    if (this.byCluster.size === 0 || buf.length === 0) return;
    const last = Math.floor((at + buf.length - 1) / this.cs);
    for (let c = Math.floor(at / this.cs); c <= last; c++) {
      for (const p of this.byCluster.get(c) ?? []) {
        const from = Math.max(at, p.offset);
        const to = Math.min(at + buf.length, p.offset + p.bytes.length);
        if (from < to) buf.set(p.bytes.subarray(from - p.offset, to - p.offset), from - at);
      }
    }
  }
}

/** Sorted, merged [start, end) intervals (empty ones dropped). */
function merged(list: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  for (const [s, e] of list.filter(([s, e]) => s < e).sort((a, b) => a[0] - b[0])) {
    const prev = out[out.length - 1];
    if (prev && s <= prev[1]) prev[1] = Math.max(prev[1], e);
    else out.push([s, e]);
  }
  return out;
}

/** The parts of [from, to) no interval of `covered` (sorted, merged) reaches. */
function uncovered(covered: readonly [number, number][], from: number, to: number): [number, number][] {
  const out: [number, number][] = [];
  // The first interval ending after `from` (binary search: there may be many requests).
  let lo = 0;
  let hi = covered.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (covered[mid][1] <= from) lo = mid + 1;
    else hi = mid;
  }
  let at = from;
  for (let i = lo; i < covered.length; i++) {
    const [s, e] = covered[i];
    if (s >= to) break;
    if (s > at) out.push([at, s]);
    at = Math.max(at, e);
  }
  if (at < to) out.push([at, to]);
  return out;
}
