// `amend` on a qcow2 image whose writable open writes by itself (persistent bitmaps, a stale
// bitmaps extension): qemu-img amend opens the image, which marks the bitmaps in use, amends it,
// and its close stores the bitmaps anew over whatever the amend left (truncated to a new size;
// after a downgrade the v2 header keeps the extension without its autoclear bit, so qemu leaves
// a stale extension whose clusters `check` counts as leaked). qemu's failures after the open
// keep the open's and close's writes (bitmap-session.ts).
import type { AmendPlan, BlockDevice } from '../types.ts';
import { aroundBitmaps } from './bitmap-session.ts';
import type { LiveBitmap } from './bitmap-state.ts';
import { PlanRefusal } from './refcount-update.ts';

/** What the amend inside the session learns for the close. */
export interface AmendSession {
  readonly bitmaps: readonly LiveBitmap[];
  /** The disk's size after a truncate (the bitmaps follow it). */
  virtualSize?: bigint;
  /** qemu's free_cluster_index after the amend's allocations, where known. */
  freeClusterIndex?: number;
}

export function aroundAmend(dev: BlockDevice, amend: (opened: BlockDevice, session: AmendSession) => AmendPlan): AmendPlan {
  let inner: AmendPlan | undefined;
  try {
    const plan = aroundBitmaps(dev, (opened, bitmaps) => {
      const session: AmendSession = { bitmaps };
      inner = amend(opened, session);
      if ('refused' in inner) throw new PlanRefusal(inner.refused);
      if (inner.error) return { failed: inner.error.join('\n'), steps: inner.steps };
      return { steps: inner.steps, virtualSize: session.virtualSize, freeClusterIndex: session.freeClusterIndex };
    });
    const done = inner as Exclude<AmendPlan, { refused: string }>;
    return { ...done, steps: plan.steps };
  } catch (e) {
    if (e instanceof PlanRefusal) return { refused: e.message.startsWith('instar ') ? e.message : `instar cannot amend this qcow2 image: ${e.message}; nothing was written` };
    throw e;
  }
}
