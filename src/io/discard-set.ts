// Ranges of a writable file that an op freed and qemu would discard (punch a hole there), held by
// the guest until the op ends: the guest cannot punch holes (no FFI), the trusted host can, after
// the op's writes are durable. Until then the set behaves as if the range held zeros: a read sees
// zeros there, a later write takes its bytes out of the set (the final set never names bytes the
// same op wrote again), a truncate cuts it. Ranges stay 512-aligned (what the host accepts): an
// unaligned sliver left by a write or a discard is written as zeros at once, as are ranges beyond
// MAX_DISCARD_RANGES (the same bytes, only without the hole). Freed ranges are unreferenced, so
// writing zeros there or punching them later is safe at any point of a crash.
// A range's `unit` keeps qemu's request size where it matters: qemu discards some freed clusters
// one request per cluster (unit: the cluster size), others in one merged request (unit 0). On a
// file system whose blocks are larger than a cluster, per-cluster punches free no block (they only
// zero bytes), a merged one does; the host punches each unit-aligned piece on its own.

/** Most ranges one device hands the host; more are written as zeros by the guest. */
export const MAX_DISCARD_RANGES = 65536;
/** The alignment of every range the host is given. */
export const DISCARD_ALIGNMENT = 512;

/** Of two overlapping runs' units, the one with the smaller requests (0 is one request for all). */
const finer = (a: number, b: number) => (a === 0 ? b : b === 0 ? a : Math.min(a, b));
const down = (n: number) => n - (n % DISCARD_ALIGNMENT);
const up = (n: number) => down(n + DISCARD_ALIGNMENT - 1);

/** [start, end, unit]: a 512-aligned byte range and its request unit (0: one request). */
type Run = [number, number, number];

export class DiscardSet {
  /** Sorted, disjoint runs; adjoining ones only where their units differ. */
  private readonly runs: Run[] = [];

  /** `zero` writes zeros to the file itself (not through this set). */
  constructor(private readonly zero: (pos: number, length: number) => void) {}

  get count(): number {
    return this.runs.length;
  }

  /**
   * Marks [pos, pos + length) as freed: to be punched, reading as zeros meanwhile; `unit`: qemu
   * discards each unit-aligned piece with its own request (0: the whole range at once).
   */
  add(pos: number, length: number, unit = 0): void {
    if (length <= 0) return;
    const end = pos + length;
    const start = up(pos);
    const last = down(end);
    if (start >= last) return this.zero(pos, length);
    if (start > pos) this.zero(pos, start - pos);
    if (end > last) this.zero(last, end - last);
    // The runs that touch [start, last) merge with it: those it overlaps, and those it adjoins
    // with the same unit (an adjoining run of another unit stays apart).
    let first = this.firstEndingAtOrAfter(start);
    if (first < this.runs.length && this.runs[first][1] === start && this.runs[first][2] !== unit) first++;
    let after = first;
    const merged: Run = [start, last, unit];
    while (after < this.runs.length && this.runs[after][0] <= last) {
      const [from, to, other] = this.runs[after];
      if (from === last && other !== unit) break;
      merged[0] = Math.min(merged[0], from);
      merged[1] = Math.max(merged[1], to);
      merged[2] = finer(merged[2], other);
      after++;
    }
    if (after === first && this.runs.length >= MAX_DISCARD_RANGES) return this.zero(start, last - start);
    this.runs.splice(first, after - first, merged);
  }

  /** Takes [pos, pos + length) out of the set: the op writes it (the rest of a cut range stays freed). */
  remove(pos: number, length: number): void {
    if (length <= 0 || this.runs.length === 0) return;
    const end = pos + length;
    let at = this.firstEndingAtOrAfter(pos + 1);
    const kept: Run[] = [];
    const first = at;
    for (; at < this.runs.length && this.runs[at][0] < end; at++) {
      const [from, to, unit] = this.runs[at];
      if (from < pos) kept.push(...this.aligned(from, pos, unit));
      if (to > end) kept.push(...this.aligned(end, to, unit));
    }
    if (at > first) this.runs.splice(first, at - first, ...kept);
  }

  /** The file is cut to `size`: nothing past it stays to be punched. */
  clip(size: number): void {
    this.remove(size, Number.MAX_SAFE_INTEGER - size);
  }

  /** Zeros the parts of `buf` (read at `pos`) that lie in the set. */
  maskRead(buf: Uint8Array, pos: number): void {
    if (this.runs.length === 0) return;
    const end = pos + buf.length;
    for (let at = this.firstEndingAtOrAfter(pos + 1); at < this.runs.length && this.runs[at][0] < end; at++) {
      const [from, to] = this.runs[at];
      buf.fill(0, Math.max(from, pos) - pos, Math.min(to, end) - pos);
    }
  }

  /** Writes zeros over the whole set and empties it (where nobody will punch it). */
  settle(): void {
    for (const [from, to] of this.runs) this.zero(from, to - from);
    this.runs.length = 0;
  }

  /** The set as [offset, length, unit] triples, in file order. */
  ranges(): [number, number, number][] {
    return this.runs.map(([from, to, unit]) => [from, to - from, unit]);
  }

  /** [from, to) with its unaligned ends written as zeros: the aligned middle, if any. */
  private aligned(from: number, to: number, unit: number): Run[] {
    const start = up(from);
    const last = down(to);
    if (start >= last) {
      this.zero(from, to - from);
      return [];
    }
    if (start > from) this.zero(from, start - from);
    if (to > last) this.zero(last, to - last);
    return [[start, last, unit]];
  }

  /** Index of the first run whose end is at or after `pos`. */
  private firstEndingAtOrAfter(pos: number): number {
    let lo = 0;
    let hi = this.runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.runs[mid][1] < pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
