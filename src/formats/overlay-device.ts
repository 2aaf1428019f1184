// A read-only view of a device as it will be once some writes are made: what a planner reads to
// check its own plan (a repair counts references again over the refcount structure it is about to
// write) without writing anything yet.
import type { BlockDevice } from './types.ts';

export class OverlayDevice implements BlockDevice {
  readonly size: number;
  private readonly writes: { pos: number; bytes: Uint8Array }[];

  /** `writes` must not overlap one another. */
  constructor(private readonly base: BlockDevice, writes: readonly { pos: number; bytes: Uint8Array }[]) {
    this.writes = [...writes].sort((a, b) => a.pos - b.pos);
    this.size = this.writes.reduce((end, w) => Math.max(end, w.pos + w.bytes.length), base.size);
  }

  read(buf: Uint8Array, pos: number): number {
    const want = Math.max(0, Math.min(buf.length, this.size - pos));
    const got = pos < this.base.size ? this.base.read(buf.subarray(0, Math.min(want, this.base.size - pos)), pos) : 0;
    buf.fill(0, got, want);
    // The first write that may reach `pos`, then every one that starts before the read's end.
    let lo = 0;
    let hi = this.writes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.writes[mid].pos + this.writes[mid].bytes.length <= pos) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.writes.length && this.writes[i].pos < pos + want; i++) {
      const w = this.writes[i];
      const from = Math.max(pos, w.pos);
      const to = Math.min(pos + want, w.pos + w.bytes.length);
      buf.set(w.bytes.subarray(from - w.pos, to - w.pos), from - pos);
    }
    return want;
  }
}
