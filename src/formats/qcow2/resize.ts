// qcow2 resize, planned as qemu's qcow2_co_truncate writes it (block/qcow2.c), pure: the header,
// L1, L2 and refcount bytes in, the writes out, applied by formats/repair.ts.
//
// Growing: when the new size needs more L1 entries, qemu allocates the new table first-fit from
// cluster 0 (alloc_clusters_noref), writes its refcounts, the table, then points the header at it
// (qcow2_grow_l1_table); then it writes the new size; the old table's refcounts are dropped in
// its cache and written at close. --preallocation=metadata is in resize-prealloc.ts, the zero
// clusters over a longer backing file in resize-zero.ts, shrinking in resize-shrink.ts.
//
// --preallocation=falloc|full is in resize-falloc.ts. Persistent bitmaps (and a stale bitmaps
// extension): the resize runs between qemu's writable open and close (bitmap-session.ts), the
// bitmaps truncated to the new size. An external data file (granted for writing) is cut or grown
// to the new size, as qemu's PREALLOC_MODE_OFF truncate does; its clusters are not counted, so a
// shrink only drops their entries. Refused in instar's words, nothing written, where qemu would
// do more than this: a dirty image, unknown autoclear bits, an external data file with
// preallocation or under a longer backing file (or not granted for writing).
import { ImageError, type BlockDevice, type Image, type ResizeCapability, type ResizePlan, type ResizeRequest } from '../types.ts';
import { readAt } from '../bytes.ts';
import type { RepairStep } from '../repair.ts';
import { AUTOCLEAR, INCOMPAT, MAX_L1_BYTES, l1EntriesFor, parseHeader, type Qcow2Header } from './header.ts';
import { PlanRefusal, RefcountModel } from './refcount-update.ts';
import { MAX_REFCOUNT_BYTES, planShrink } from './resize-shrink.ts';
import { preallocateMetadata, type GrowState } from './resize-prealloc.ts';
import { zeroNewArea } from './resize-zero.ts';
import { preallocateData } from './resize-falloc.ts';
import { growL1Table } from './l1-grow.ts';
import { ReplayedDevice } from '../replayed-device.ts';
import { aroundBitmaps, openWritesBitmaps } from './bitmap-session.ts';
import type { LiveBitmap } from './bitmap-state.ts';

const INT_MAX = 0x7fffffff;
const KNOWN_AUTOCLEAR = AUTOCLEAR.bitmaps | AUTOCLEAR.dataFileRaw;

const refusedText = (why: string) => `instar cannot resize this qcow2 image (${why}); nothing was written`;
const refused = (why: string): ResizePlan => ({ error: refusedText(why) });

/** A write of header field bytes. */
function fieldWrite(pos: number, bytes: Buffer): RepairStep {
  return { kind: 'write', pos, bytes };
}

function sizeWrite(size: number): RepairStep {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(size));
  return fieldWrite(24, b);
}

/** What instar does not do (qemu would), nothing written; `request`: a data file is resized with it where instar can. */
function refusal(h: Qcow2Header, request?: ResizeRequest): ResizePlan | undefined {
  if (h.incompatible & INCOMPAT.dirty) return refused('its dirty bit is set: qemu would repair its refcounts first');
  if (h.autoclear & ~KNOWN_AUTOCLEAR) return refused('qemu would clear unknown autoclear bits in its header');
  if (h.incompatible & INCOMPAT.dataFile && !(request && dataFileResizable(h, request))) return refused('it has an external data file');
  return undefined;
}

/**
 * Whether instar resizes the data file with the image: granted writable, no preallocation (qemu
 * would preallocate in the data file), no zero clusters over a longer backing file (qemu zeroes
 * a raw data file's range too), and no growth of a raw data file (qemu maps the new area's
 * clusters onto it, as metadata preallocation would: not done).
 */
function dataFileResizable(h: Qcow2Header, request: ResizeRequest): boolean {
  const oldLength = Number(h.size / 512n) * 512;
  const growing = request.newSize > oldLength;
  const zeroWrite = request.backingSize !== undefined && request.backingSize > oldLength && growing;
  const rawGrowth = growing && (h.autoclear & AUTOCLEAR.dataFileRaw) !== 0n;
  return request.dataFile?.truncate !== undefined && request.preallocation === 'off' && !zeroWrite && !rawGrowth;
}

/** The plan with the data file's new length, when the image has one. */
function withDataFile(h: Qcow2Header, plan: Planned, newSize: number): Planned {
  return 'steps' in plan && h.incompatible & INCOMPAT.dataFile ? { ...plan, dataFileLength: newSize } : plan;
}

/** What qemu's qcow2_co_truncate checks before it changes anything, in its order (the bitmaps' check last). */
function qemuCheck(h: Qcow2Header, request: ResizeRequest, bitmaps: readonly LiveBitmap[]): string | undefined {
  if (request.newSize % 512 !== 0) return 'The new size must be a multiple of 512';
  if (h.nbSnapshots > 0 && h.version < 3) return "Can't resize a v2 image which has snapshots";
  // qcow2_truncate_bitmaps_check: the first bitmap of the directory that is in use fails it.
  const broken = [...bitmaps].reverse().find((b) => b.inconsistent);
  if (broken) return `Bitmap '${broken.name.toString()}' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk`;
  return undefined;
}

/** A plan and qemu's free_cluster_index after it (the close's allocations go on from there). */
export type Planned = ResizePlan & { freeClusterIndex?: number };

function planGrow(dev: BlockDevice, h: Qcow2Header, request: ResizeRequest): Planned {
  const oldLength = Number(h.size / 512n) * 512;
  const newL1 = l1EntriesFor(h, BigInt(request.newSize));
  const zeroWrite = request.backingSize !== undefined && request.backingSize > oldLength;
  // A v2 image cannot hold zero clusters: qemu fails after its L1 work and its metadata
  // preallocation, before the size (falloc and full zero nothing).
  const v2Zeros = zeroWrite && h.version < 3 && (request.preallocation === 'off' || request.preallocation === 'metadata');
  const V2_ZEROS_FAILED = 'Failed to zero out new clusters: Operation not supported';
  if (v2Zeros && newL1 > BigInt(h.l1Size)) return refused('qemu would grow its L1 table, then fail to write zero clusters');
  if (v2Zeros && request.preallocation === 'off') return { error: V2_ZEROS_FAILED };
  const steps: RepairStep[] = [];
  const refs = new RefcountModel(dev, h, { maxBlockBytes: MAX_REFCOUNT_BYTES });
  const state: GrowState = { refs, l1: readAt(dev, h.l1TableOffset, h.l1Size * 8), l1Offset: Number(h.l1TableOffset), fileSize: dev.size };
  if (newL1 > BigInt(h.l1Size)) {
    if (newL1 > BigInt(Math.floor(INT_MAX / 8)) || newL1 > BigInt(MAX_L1_BYTES / 8)) return { error: 'Failed to grow the L1 table: File too large' };
    const grown = growL1Table(state, h.clusterSize, Number(newL1));
    if (!Array.isArray(grown)) return 'error' in grown ? grown : refused(grown.refused);
    steps.push(...grown);
  }
  if (request.preallocation === 'falloc' || request.preallocation === 'full') {
    const prealloc = preallocateData(dev, h, state, oldLength, request.newSize, request.preallocation, request.readGuest, zeroWrite);
    if (typeof prealloc === 'string') return refused(prealloc);
    steps.push(...prealloc);
  }
  if (request.preallocation === 'metadata') {
    const prealloc = preallocateMetadata(dev, h, state, oldLength, request.newSize, request.backingSize, request.readGuest);
    if (typeof prealloc === 'string') return refused(prealloc);
    steps.push(...prealloc);
    if (v2Zeros) return { error: V2_ZEROS_FAILED, written: [...steps, ...refs.flush(), { kind: 'barrier' }] };
  }
  // falloc and full allocate the new area's clusters with zeros in them: nothing reads through
  // to the backing file, no zero flags (measured on 7.2 and 10.0).
  if (zeroWrite && (request.preallocation === 'off' || request.preallocation === 'metadata')) {
    // After a metadata preallocation qemu zeroes the clusters it just allocated (zero flags on
    // them): the tables as the steps so far leave them.
    const zeros = zeroNewArea(steps.length > 0 ? new ReplayedDevice(dev, steps) : dev, h, state, oldLength, request.newSize, request.readGuest);
    if (typeof zeros === 'string') return refused(zeros);
    steps.push(...zeros);
  }
  steps.push(sizeWrite(request.newSize), { kind: 'barrier' });
  steps.push(...refs.flush(), { kind: 'barrier' });
  return { steps, freeClusterIndex: refs.freeClusterIndex };
}

/** qcow2_co_truncate's writes for `request` once qemu's checks passed. */
function planChange(dev: BlockDevice, h: Qcow2Header, request: ResizeRequest): Planned {
  try {
    const oldLength = Number(h.size / 512n) * 512;
    if (request.newSize < oldLength) return withDataFile(h, planShrink(dev, h, request.newSize, { sizeWrite, refused }), request.newSize);
    return withDataFile(h, planGrow(dev, h, request), request.newSize);
  } catch (e) {
    // The model's refusals say "nothing was written" themselves: refused() says it once.
    if (e instanceof PlanRefusal) return refused(e.message.replace(/; nothing was written$/, ''));
    if (e instanceof ImageError) return refused(e.message);
    throw e;
  }
}

/**
 * qcow2_co_truncate inside a writable open another command holds (amend -o size): qemu's checks
 * against the bitmaps that open loaded, then the writes and qemu's allocation hint after them.
 */
export function planTruncateOpened(opened: BlockDevice, request: ResizeRequest, bitmaps: readonly LiveBitmap[]): Planned {
  const h = parseHeader(opened);
  const early = refusal(h);
  if (early) return early;
  const failed = qemuCheck(h, request, bitmaps);
  return failed === undefined ? planChange(opened, h, request) : { error: failed };
}

/** An instar refusal (nothing may be written), as opposed to qemu's own failure. */
const isRefusal = (message: string) => message.startsWith('instar ');

/** qcow2_co_truncate's writes for `request` (resize, and snapshot -a of another disk size). */
export function planTruncate(dev: BlockDevice, request: ResizeRequest): ResizePlan {
  const h = parseHeader(dev);
  const early = refusal(h, request);
  // Refused for its data file only: qemu's own check fails first, after what its writable open
  // and close write (the bitmaps live in the image file, whatever holds the data).
  if (early && refusal({ ...h, incompatible: h.incompatible & ~INCOMPAT.dataFile }) === undefined) {
    if (!openWritesBitmaps(dev)) {
      const failed = qemuCheck(h, request, []);
      if (failed !== undefined) return { error: failed };
    } else {
      try {
        const session = aroundBitmaps(dev, (_opened, bitmaps) => {
          const failed = qemuCheck(h, request, bitmaps);
          if (failed === undefined) throw new PlanRefusal(refusedText('it has an external data file'));
          return { failed };
        });
        if (session.failed !== undefined) return { error: session.failed, written: session.steps };
      } catch (e) {
        if (!(e instanceof PlanRefusal)) throw e;
      }
    }
  }
  if (early) return early;
  if (!openWritesBitmaps(dev)) {
    const failed = qemuCheck(h, request, []);
    return failed === undefined ? planChange(dev, h, request) : { error: failed };
  }
  try {
    const session = aroundBitmaps(dev, (opened, bitmaps) => {
      const failed = qemuCheck(h, request, bitmaps);
      if (failed !== undefined) return { failed };
      const plan = planChange(opened, parseHeader(opened), request);
      if ('error' in plan) {
        if (isRefusal(plan.error)) throw new PlanRefusal(plan.error);
        return { failed: plan.error };
      }
      return { steps: plan.steps, virtualSize: BigInt(request.newSize), freeClusterIndex: plan.freeClusterIndex };
    });
    return session.failed === undefined ? withDataFile(h, { steps: session.steps }, request.newSize) : { error: session.failed, written: session.steps };
  } catch (e) {
    if (e instanceof PlanRefusal) return { error: isRefusal(e.message) ? e.message : refusedText(e.message) };
    if (e instanceof ImageError) return refused(e.message);
    throw e;
  }
}

/** What qemu's writable open and close alone write (a resize that fails in qemu-img's own checks). */
export function openCloseSteps(dev: BlockDevice): RepairStep[] {
  if (!openWritesBitmaps(dev)) return [];
  // The bitmaps live in the image file, whatever holds the data: an external data file changes
  // nothing here. What else instar refuses is said (it wrote nothing), never skipped in silence.
  const h = parseHeader(dev);
  const why = refusal({ ...h, incompatible: h.incompatible & ~INCOMPAT.dataFile });
  if (why && 'error' in why) throw new ImageError(why.error);
  try {
    return aroundBitmaps(dev, () => ({ steps: [] })).steps;
  } catch (e) {
    if (e instanceof PlanRefusal) throw new ImageError(isRefusal(e.message) ? e.message : refusedText(e.message));
    throw e;
  }
}

export const qcow2Resize: ResizeCapability = {
  plan: (_image: Image, dev: BlockDevice, request: ResizeRequest): ResizePlan => planTruncate(dev, request),
  openClose: openCloseSteps,
};
