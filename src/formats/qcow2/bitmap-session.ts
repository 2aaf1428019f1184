// qemu's writable open and close of a qcow2 image around a mutating command (resize, snapshot):
// persistent bitmaps are marked in use at open (qcow2_load_dirty_bitmaps) and stored anew at close
// (qcow2_store_persistent_dirty_bitmaps), and a stale bitmaps extension is dropped at open. Both
// happen whether the command succeeds or fails after the open, so a failure carries them too.
// The change is planned over a view of the file as the open leaves it, the close over the view the
// change leaves; all three are written in that order, each part crash safe on its own.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { ReplayedDevice } from '../replayed-device.ts';
import { AUTOCLEAR, INCOMPAT, parseHeader } from './header.ts';
import { readHeaderModel } from './header-model.ts';
import { PlanRefusal } from './refcount-update.ts';
import { planBitmapReopen } from './bitmap-plan.ts';
import type { LiveBitmap } from './bitmap-state.ts';

export type SessionChange =
  /**
   * `virtualSize`: the disk's size after it; `freeClusterIndex`: qemu's allocation hint after it;
   * `dirtied`: guest byte ranges it wrote (the enabled bitmaps record them).
   */
  | { steps: RepairStep[]; virtualSize?: bigint; freeClusterIndex?: number; dirtied?: readonly [number, number][]; added?: readonly LiveBitmap[] }
  /** qemu's command failed after the open with these words (having written `steps` first). */
  | { failed: string; steps?: RepairStep[] };

export interface SessionPlan {
  steps: RepairStep[];
  failed?: string;
}

/** Whether qemu's writable open of this image writes by itself: it has bitmaps, or a stale extension. */
export function openWritesBitmaps(dev: BlockDevice): boolean {
  const h = parseHeader(dev);
  if (h.autoclear & AUTOCLEAR.bitmaps) return true;
  return readHeaderModel(dev, h).staleBitmaps === true;
}

/**
 * The open's writes, `change` planned over the file as they leave it, then the close's writes over
 * the file as the change leaves it. Throws PlanRefusal (nothing written) for what instar does not do.
 */
export function aroundBitmaps(dev: BlockDevice, change: (opened: BlockDevice, bitmaps: readonly LiveBitmap[]) => SessionChange): SessionPlan {
  const h = parseHeader(dev);
  // A dirty image is repaired by the host's open first (dirty-repair.ts): this one is not expected.
  if (h.incompatible & INCOMPAT.dirty) throw new PlanRefusal('instar refuses this qcow2 image: it has persistent bitmaps and is dirty; nothing was written');
  const reopen = planBitmapReopen(dev);
  const opened = new ReplayedDevice(dev, reopen.open);
  const result = change(opened, reopen.live);
  const steps = result.steps ?? [];
  const after = steps.length > 0 ? new ReplayedDevice(opened, steps) : opened;
  const opts = 'failed' in result ? {} : { virtualSize: result.virtualSize, freeClusterIndex: result.freeClusterIndex, dirtied: result.dirtied, added: result.added };
  const close = reopen.close(after, opts);
  const all = [...reopen.open, { kind: 'barrier' } as const, ...steps, { kind: 'barrier' } as const, ...close];
  return 'failed' in result ? { steps: all, failed: result.failed } : { steps: all };
}
