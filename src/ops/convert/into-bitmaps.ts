// convert -n --bitmaps into an existing qcow2 image (qemu's convert_copy_bitmaps after the copy):
// each source bitmap, in the source's list order, is added to the target with its granularity and
// enabled state, then the source's bits are merged into it, with the checks and words of qemu's
// QMP handlers (bitmap-actions.ts). The first failure ends the walk: the bitmaps added before it
// are still stored at close (a bitmap whose merge failed is removed first), and convert fails
// after its copy.
import type { Qcow2Header } from '../../formats/qcow2/header.ts';
import type { LiveBitmap } from '../../formats/qcow2/bitmap-state.ts';
import { bitmapAction, type ActionContext, type BitmapRequest } from '../../formats/qcow2/bitmap-actions.ts';
import { entrySize } from '../../formats/qcow2/bitmap-dir.ts';
import { blockNodeName } from '../../output/node-name.ts';
import { skippedWarning } from './to-image-bitmaps.ts';

export interface AddedBitmaps {
  /** The new bitmaps, in qemu's list order (newest first). */
  added: LiveBitmap[];
  /** --skip-broken-bitmaps' warnings, qemu-img's text without its program name. */
  warnings: string[];
  /** qemu's message for the add or merge that failed. */
  failed?: string;
}

/** The bitmaps qemu adds to a target (header `h`, disk of `virtualSize`) whose open loaded `loaded`. */
export function addedBitmaps(h: Qcow2Header, virtualSize: bigint, loaded: readonly LiveBitmap[], sources: readonly LiveBitmap[]): AddedBitmaps {
  let live = [...loaded];
  const ctx: ActionContext = {
    h,
    virtualSize,
    live: () => live,
    setLive: (list) => { live = list; },
    // What the file holds: the bitmaps the open loaded (new ones reach the disk at close).
    diskCount: () => loaded.length,
    diskDirectorySize: () => loaded.reduce((n, b) => n + entrySize(b.name.length), 0),
    removeFromDisk: () => undefined,
  };
  const warnings: string[] = [];
  let failed: string | undefined;
  for (const b of sources) {
    if (b.inconsistent) {
      warnings.push(skippedWarning(b));
      continue;
    }
    const name = b.name.toString('utf8');
    const request: BitmapRequest = { name, actions: [], granularity: 2 ** b.granularityBits, nodeName: blockNodeName(), source: [...sources] };
    const notAdded = bitmapAction(ctx, { kind: 'add' }, request);
    if (notAdded !== undefined) {
      failed = `Failed to create bitmap ${name}: ${notAdded}`;
      break;
    }
    live[0].enabled = b.enabled;
    const notMerged = bitmapAction(ctx, { kind: 'merge', source: name }, request);
    if (notMerged !== undefined) {
      // qemu removes the bitmap it could not fill (not on disk yet: nothing is written for it).
      live = live.slice(1);
      failed = `Failed to populate bitmap ${name}: ${notMerged}`;
      break;
    }
  }
  return { added: live.slice(0, live.length - loaded.length), warnings, failed };
}
