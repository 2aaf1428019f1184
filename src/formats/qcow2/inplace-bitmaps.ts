// In-place guest writes (inplace-write.ts: commit's base, convert -n's target) into a qcow2 image
// whose writable open writes by itself: its bitmaps are marked in use first, record the writes
// (the enabled ones) and are stored anew at the end; a stale extension is dropped at the open.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { aroundBitmaps } from './bitmap-session.ts';
import type { InPlaceOptions } from './inplace-write.ts';

/** The options a plan inside the session takes (planInPlaceWrite's, merged into the caller's). */
export type SessionOptions = Pick<InPlaceOptions, 'bitmapsOpened' | 'after'>;

/** `write` planned inside the session; `dirtied`: the guest byte ranges [start, end) qemu's requests cover. */
export function inPlaceWithBitmaps(dev: BlockDevice, write: (opened: BlockDevice, opts: SessionOptions) => RepairStep[], dirtied: readonly [number, number][]): RepairStep[] {
  const after: { freeClusterIndex?: number } = {};
  return aroundBitmaps(dev, (opened) => ({
    steps: write(opened, { bitmapsOpened: true, after }),
    freeClusterIndex: after.freeClusterIndex,
    dirtied,
  })).steps;
}
