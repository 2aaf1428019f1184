// `rebase -u` for qcow2 (qemu's qcow2_change_backing_file): a new backing file name and format in
// the header, nothing else. The plan is ONE write: the whole first cluster, as qemu writes it.
//
// With persistent bitmaps, qemu's open and close around it (bitmap-session.ts) write more.
//
// Crash safety: the plan is a single write of the first cluster, which holds the header, its
// extensions and the backing name, and whose table-locating fields are rewritten with their old
// values. A crash therefore leaves either the old cluster, the new one, or (a torn write) a mix of
// old and new sectors of it: the same risk qemu's own one bdrv_pwrite of that cluster carries.
import type { BlockDevice, HeaderChangePlan } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { AUTOCLEAR, INCOMPAT, parseHeader, type Qcow2Header } from './header.ts';
import { readHeaderModel } from './header-model.ts';
import { HeaderSpaceError, serializeHeader, type Qcow2HeaderModel } from './header-write.ts';
import { aroundBitmaps } from './bitmap-session.ts';
import { PlanRefusal } from './refcount-update.ts';

/** The longest backing file name qemu's qcow2 driver accepts. */
const MAX_BACKING_NAME = 1023;
/** sizeof(bs->backing_format) - 1: qemu keeps a longer format name cut to this. */
const MAX_FORMAT_NAME = 15;


/**
 * What instar will not rewrite although qemu would: images whose read-write open makes qemu change
 * more than the header (dirty refcounts repaired, persistent bitmaps marked in use and stored back).
 */
export function headerRewriteRefusal(dev: BlockDevice, bitmapsOpened = false): string | undefined {
  const h = parseHeader(dev);
  if (h.incompatible & INCOMPAT.dirty) return 'its dirty bit is set (qemu would repair its refcounts first)';
  if (h.autoclear & AUTOCLEAR.bitmaps && !bitmapsOpened) return 'it has persistent bitmaps';
  if (dev.size < h.clusterSize) return 'the file is shorter than its header cluster';
  return undefined;
}

/** The steps that write `model` as the image's first cluster, or qemu's ENOSPC. */
export function planHeaderWrite(model: Qcow2HeaderModel): { steps: RepairStep[] } | { errno: 'ENOSPC' } {
  try {
    return { steps: [{ kind: 'write', pos: 0, bytes: serializeHeader(model) }, { kind: 'barrier' }] };
  } catch (e) {
    if (e instanceof HeaderSpaceError) return { errno: 'ENOSPC' };
    throw e;
  }
}

/** Applies qemu's qcow2_change_backing_file rules to a model (mutates it); an errno when refused. */
export function changeBackingInModel(m: Qcow2HeaderModel, backing: Uint8Array | undefined, format: Uint8Array | undefined): 'EINVAL' | undefined {
  // The block layer's rule, checked before the driver's: a new backing file needs its format named.
  if (backing && !format) return 'EINVAL';
  // A raw data file must stand alone: a backing file would change what the disk reads as.
  if (backing && m.autoclear & AUTOCLEAR.dataFileRaw) return 'EINVAL';
  if (backing && backing.length > MAX_BACKING_NAME) return 'EINVAL';
  m.backingFile = backing;
  m.backingFormat = format ? format.subarray(0, MAX_FORMAT_NAME) : undefined;
  return undefined;
}

/** rebase -u: the plan that names `backing` (undefined: none) with `format` (undefined: none). */
export function planChangeBacking(dev: BlockDevice, backing: Uint8Array | undefined, format: Uint8Array | undefined): HeaderChangePlan {
  const h = parseHeader(dev);
  if (!(h.autoclear & AUTOCLEAR.bitmaps) || h.incompatible & INCOMPAT.dirty) return changeBackingPlan(dev, h, readHeaderModel(dev, h), backing, format);
  // Persistent bitmaps: the header change between qemu's writable open (bitmaps marked in use)
  // and its close (bitmaps stored anew), also when the change fails (bitmap-session.ts).
  try {
    const failed: { errno?: 'ENOSPC' | 'EINVAL' | 'ENOTSUP' } = {};
    const session = aroundBitmaps(dev, (opened) => {
      const plan = changeBackingPlan(opened, parseHeader(opened), readHeaderModel(opened, parseHeader(opened)), backing, format, true);
      if ('refused' in plan) throw new PlanRefusal(plan.refused);
      if (!('errno' in plan)) return { steps: plan.steps };
      failed.errno = plan.errno;
      return { failed: plan.errno, steps: plan.steps };
    });
    return failed.errno ? { errno: failed.errno, steps: session.steps } : { steps: session.steps };
  } catch (e) {
    if (e instanceof PlanRefusal) return { refused: e.message };
    throw e;
  }
}

/** The header change inside a bitmap session another command holds (safe rebase after its copy). */
export function planChangeBackingOpened(opened: BlockDevice, backing: Uint8Array | undefined, format: Uint8Array | undefined): HeaderChangePlan {
  const h = parseHeader(opened);
  return changeBackingPlan(opened, h, readHeaderModel(opened, h), backing, format, true);
}

function changeBackingPlan(dev: BlockDevice, h: Qcow2Header, m: Qcow2HeaderModel, backing: Uint8Array | undefined, format: Uint8Array | undefined, bitmapsOpened = false): HeaderChangePlan {
  const refusal = headerRewriteRefusal(dev, bitmapsOpened);
  if (refusal) return { refused: `instar cannot change the header of this qcow2 image (${refusal}); nothing was written` };
  // qemu's read-write open rewrote the header already if it cleared unknown autoclear bits or
  // dropped a stale bitmaps extension.
  const opened = h.autoclear !== m.autoclear || m.staleBitmaps ? planHeaderWrite({ ...m }) : undefined;
  const openSteps = opened && 'steps' in opened ? opened.steps : [];
  const errno = changeBackingInModel(m, backing, format);
  if (errno) return { errno, steps: openSteps };
  const plan = planHeaderWrite(m);
  return 'errno' in plan ? { errno: plan.errno, steps: openSteps } : plan;
}
