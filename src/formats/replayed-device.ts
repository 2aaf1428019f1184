// A read-only view of a device as a plan's steps will leave it (formats/repair.ts): a planner that
// runs after another one in the same qemu session (a snapshot apply after its truncate, a bitmap
// store at close after a resize) plans over this view, and the steps of both are written in order.
// Zero steps and cut-off tails are held as ranges, not buffers, so a large preallocation costs no
// memory; data copies ('fill') are not replayed, and reading them is an error.
import { ImageError, type BlockDevice } from './types.ts';
import type { RepairStep } from './repair.ts';

/** Bytes `bytes` at `pos`, or zeros over `length` when `bytes` is absent; `unread`: data copied at apply time. */
interface Layer {
  pos: number;
  length: number;
  bytes?: Uint8Array;
  unread?: boolean;
}

export class ReplayedDevice implements BlockDevice {
  readonly size: number;
  private readonly layers: Layer[] = [];

  constructor(private readonly base: BlockDevice, steps: readonly RepairStep[]) {
    let size = base.size;
    for (const s of steps) {
      if (s.kind === 'barrier') continue;
      if (s.kind === 'truncate') {
        // Bytes cut off and grown again read as zeros.
        if (s.size < size) this.layers.push({ pos: s.size, length: size - s.size });
        size = s.size;
      } else if (s.kind === 'write') this.layers.push({ pos: s.pos, length: s.bytes.length, bytes: s.bytes });
      // Data a plan copies when it runs: a planner after it may not read it (metadata only).
      else if (s.kind === 'fill') this.layers.push({ pos: s.pos, length: s.length, unread: true });
      // Zeros written, or a range freed (it reads as zeros).
      else this.layers.push({ pos: s.pos, length: s.length });
    }
    this.size = size;
  }

  read(buf: Uint8Array, pos: number): number {
    const want = Math.max(0, Math.min(buf.length, this.size - pos));
    const got = pos < this.base.size ? this.base.read(buf.subarray(0, Math.min(want, this.base.size - pos)), pos) : 0;
    buf.fill(0, got, want);
    for (const l of this.layers) {
      const from = Math.max(pos, l.pos);
      const to = Math.min(pos + want, l.pos + l.length);
      if (from >= to) continue;
      if (l.unread) throw new ImageError('internal error: a planner read data another plan copies');
      if (l.bytes) buf.set(l.bytes.subarray(from - l.pos, to - l.pos), from - pos);
      else buf.fill(0, from - pos, to - pos);
    }
    return want;
  }
}
