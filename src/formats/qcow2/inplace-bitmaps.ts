// In-place guest writes (inplace-write.ts: commit's base, convert -n's target) into a qcow2 image
// whose writable open writes by itself: its bitmaps are marked in use first, record the writes
// (the enabled ones) and are stored anew at the end; a stale extension is dropped at the open.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { aroundBitmaps } from './bitmap-session.ts';
import type { InPlaceOptions } from './inplace-write.ts';
import { planTruncateOpened } from './resize.ts';
import { PlanRefusal } from './refcount-update.ts';
import { ReplayedDevice } from '../replayed-device.ts';
import type { LiveBitmap } from './bitmap-state.ts';

/** The options a plan inside the session takes (planInPlaceWrite's, merged into the caller's). */
export type SessionOptions = Pick<InPlaceOptions, 'bitmapsOpened' | 'after'>;

/**
 * `write` planned inside the session; `dirtied`: the guest byte ranges [start, end) qemu's requests
 * cover; `added`: bitmaps created after the write, given the ones the open loaded (convert -n --bitmaps).
 */
export function inPlaceWithBitmaps(dev: BlockDevice, write: (opened: BlockDevice, opts: SessionOptions) => RepairStep[], dirtied: readonly [number, number][], added?: (loaded: readonly LiveBitmap[]) => readonly LiveBitmap[]): RepairStep[] {
  const after: { freeClusterIndex?: number } = {};
  return aroundBitmaps(dev, (opened, loaded) => ({
    steps: write(opened, { bitmapsOpened: true, after }),
    freeClusterIndex: after.freeClusterIndex,
    dirtied,
    added: added?.(loaded),
  })).steps;
}

/**
 * `write` after qemu's truncate to `newSize` inside the same session (commit growing a base with
 * bitmaps: the job grows the base it reopened, then copies): the bitmaps follow the new size.
 */
export function grownWithBitmaps(dev: BlockDevice, newSize: number, write: (opened: BlockDevice, opts: SessionOptions) => RepairStep[], dirtied: readonly [number, number][]): RepairStep[] {
  return aroundBitmaps(dev, (opened, bitmaps) => {
    const grown = planTruncateOpened(opened, { newSize, preallocation: 'off' }, bitmaps);
    // qemu's own failure here (an inconsistent bitmap) ends its commit: instar writes nothing.
    if ('error' in grown) throw new PlanRefusal(grown.error.startsWith('instar ') ? grown.error : `instar cannot grow this qcow2 base (qemu fails: ${grown.error.split('\n')[0]}); nothing was written`);
    const after: { freeClusterIndex?: number } = {};
    const steps = write(grown.steps.length > 0 ? new ReplayedDevice(opened, grown.steps) : opened, { bitmapsOpened: true, after });
    return { steps: [...grown.steps, { kind: 'barrier' }, ...steps], virtualSize: BigInt(newSize), freeClusterIndex: after.freeClusterIndex, dirtied };
  }).steps;
}
