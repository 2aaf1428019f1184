// snapshot -a of a snapshot whose disk size differs from the image's: qemu's qcow2_snapshot_goto
// first truncates the image to the snapshot's size (blk_truncate: exact, no preallocation, the
// same writes as `resize`, shrinking included), then applies the snapshot to the truncated image.
// instar plans the truncate with resize.ts, then the apply over a view of the file as those
// writes leave it, and writes both in that order: each part is crash safe on its own, and between
// them the file is a valid image of the new size (qemu's own state at that point).
import { ImageError, type BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { PlanRefusal } from './refcount-update.ts';
import { planTruncate } from './resize.ts';

/** The file as `steps` leave it, read-only: the base's bytes under the steps' writes, in order. */
class ReplayedDevice implements BlockDevice {
  readonly size: number;
  private readonly writes: { pos: number; bytes: Uint8Array }[] = [];

  constructor(private readonly base: BlockDevice, steps: readonly RepairStep[]) {
    let size = base.size;
    for (const s of steps) {
      if (s.kind === 'truncate') {
        size = s.size;
        // Bytes cut off and grown again read as zeros.
        this.writes.push({ pos: size, bytes: new Uint8Array(Math.max(0, base.size - size)) });
      } else if (s.kind === 'write') this.writes.push({ pos: s.pos, bytes: s.bytes });
      else if (s.kind === 'zero' || s.kind === 'discard') this.writes.push({ pos: s.pos, bytes: new Uint8Array(s.length) });
      else if (s.kind === 'fill') throw new ImageError('internal error: a truncate plan copies data');
    }
    this.size = size;
  }

  read(buf: Uint8Array, pos: number): number {
    const want = Math.max(0, Math.min(buf.length, this.size - pos));
    const got = pos < this.base.size ? this.base.read(buf.subarray(0, Math.min(want, this.base.size - pos)), pos) : 0;
    buf.fill(0, got, want);
    for (const w of this.writes) {
      const from = Math.max(pos, w.pos);
      const to = Math.min(pos + want, w.pos + w.bytes.length);
      if (from < to) buf.set(w.bytes.subarray(from - w.pos, to - w.pos), from - pos);
    }
    return want;
  }
}

/**
 * The truncate to `size` qemu makes before applying a snapshot, and the device to plan the apply
 * on; throws PlanRefusal for what instar does not do (qemu would fail or write more).
 */
export function truncateForApply(dev: BlockDevice, size: bigint, hasBacking: boolean): { steps: RepairStep[]; after: BlockDevice } {
  const refuse = (why: string) => new PlanRefusal(`instar cannot apply a snapshot of another disk size to this qcow2 image (${why}); nothing was written`);
  // A longer backing file would have the grown area zeroed: not planned here.
  if (hasBacking) throw refuse('it has a backing file');
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw refuse('the snapshot\'s size is too large');
  const plan = planTruncate(dev, { newSize: Number(size), preallocation: 'off' });
  if ('error' in plan) throw refuse(plan.error.replace(/^instar cannot resize this qcow2 image \((.*)\); nothing was written$/, '$1'));
  return { steps: plan.steps, after: new ReplayedDevice(dev, plan.steps) };
}
