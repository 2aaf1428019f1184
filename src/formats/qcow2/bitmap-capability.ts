// The qcow2 driver's `bitmap` capability: a -b image's bitmaps read as qemu loads them read-only,
// and the plan of qemu-img bitmap's writes (bitmap-plan.ts), refusals turned into answers.
import { ImageError, type BitmapCapability, type BlockDevice } from '../types.ts';
import { INCOMPAT, parseHeader } from './header.ts';
import { readHeaderModel } from './header-model.ts';
import { PlanRefusal } from './refcount-update.ts';
import { loadBitmaps, type LiveBitmap } from './bitmap-state.ts';
import { planBitmap } from './bitmap-plan.ts';
import type { SourceBitmap } from './bitmap-actions.ts';

function sources(dev: BlockDevice): SourceBitmap[] {
  const h = parseHeader(dev);
  const model = readHeaderModel(dev, h);
  return loadBitmaps(dev, h, model.bitmaps, model.size).live;
}

/** qcow2_supports_persistent_dirty_bitmap: version 3 images only. */
function persistent(dev: BlockDevice): LiveBitmap[] | undefined {
  const h = parseHeader(dev);
  if (h.version < 3) return undefined;
  const model = readHeaderModel(dev, h);
  return loadBitmaps(dev, h, model.bitmaps, model.size).live;
}

export const qcow2DirtyBitmaps: BitmapCapability = {
  sources,
  persistent,
  change: (dev, request) => {
    try {
      const h = parseHeader(dev);
      // qemu's writable open would repair the refcounts of a dirty image first: not replayed.
      if (h.incompatible & INCOMPAT.dirty) throw new PlanRefusal('instar cannot change the bitmaps of this qcow2 image (its dirty bit is set); nothing was written');
      return planBitmap(dev, request);
    } catch (e) {
      if (e instanceof PlanRefusal) return { refused: e.message };
      if (e instanceof ImageError) return { refused: `instar refuses this qcow2 image: ${e.message}; nothing was written` };
      throw e;
    }
  },
};
