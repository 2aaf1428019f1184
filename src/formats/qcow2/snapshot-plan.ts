// qemu-img snapshot -c/-d/-a for qcow2 as pure planners: each replays qemu's qcow2_snapshot_create,
// qcow2_snapshot_delete or qcow2_snapshot_goto (block/qcow2-snapshot.c) over a SnapshotModel and
// returns the steps formats/repair.ts applies. Allocation follows qemu's allocator, so the file
// ends byte-identical to what qemu-img writes (the new snapshot's date aside).
import { ImageError, type BlockDevice, type SnapshotCapability, type SnapshotChangePlan } from '../types.ts';
import { AUTOCLEAR, INCOMPAT, MAX_L1_BYTES, parseHeader, validateTable, type Qcow2Header } from './header.ts';
import { allocClusters, freeClusters } from './allocator.ts';
import { PlanRefusal, RefcountRangeError } from './refcount-update.ts';
import { SnapshotModel, writeSnapshots } from './snapshot-model.ts';
import { readSnapshotTable, type SnapshotEntry } from './snapshot-table.ts';
import type { RepairStep } from '../repair.ts';
import { growL1ForApply, truncateForApply } from './snapshot-resize.ts';
import { aroundBitmaps, openWritesBitmaps, type SessionChange } from './bitmap-session.ts';

/** QCOW_MAX_SNAPSHOTS. */
const MAX_SNAPSHOTS = 65536;

export interface SnapshotPlan {
  steps: RepairStep[];
  /** qemu's create or apply failed with EINVAL after these writes (a refcount at its maximum). */
  refcountOverflow?: boolean;
  /** The file grows to this size first when qemu would have written past its end. */
  fileSize: number;
  /** qemu's free_cluster_index after the plan (a bitmap store at close allocates from there). */
  freeClusterIndex?: number;
}

/** qemu's errno for a failed driver call: the host words it per version. */
export class SnapshotErrno extends ImageError {
  /** `report`: the line qemu printed before failing (a truncate's own error). */
  constructor(message: string, errno: string, readonly report?: string) {
    super(message, errno);
  }
}

/** What qemu's writable open would change by itself, or what instar does not write: refused. */
function checkWritable(h: Qcow2Header, action: 'create' | 'delete' | 'apply'): void {
  // qemu's create and goto refuse external data files (ENOTSUP); its delete goes on.
  if (h.incompatible & INCOMPAT.dataFile && action !== 'delete') throw new SnapshotErrno('Operation not supported', 'ENOTSUP');
  const refuse = (why: string) => new PlanRefusal(`instar cannot change snapshots of this qcow2 image (${why}); nothing was written`);
  if (h.incompatible & INCOMPAT.dirty) throw refuse('its dirty bit is set');
  if (h.incompatible & INCOMPAT.dataFile) throw refuse('it has an external data file');
  // Persistent bitmaps are handled around the planners (answer() below).
  if (h.autoclear & ~AUTOCLEAR.bitmaps) throw refuse('autoclear feature bits are set');
}

function open(dev: BlockDevice, action: 'create' | 'delete' | 'apply'): { model: SnapshotModel; list: SnapshotEntry[]; tableBytes: number } {
  const h = parseHeader(dev);
  checkWritable(h, action);
  const { list, tableBytes } = readSnapshotTable(dev, h);
  return { model: new SnapshotModel(dev, h), list, tableBytes };
}

/** find_new_snapshot_id: one more than the largest id read as strtoul reads it. */
function newSnapshotId(list: readonly SnapshotEntry[]): Buffer {
  let max = 0n;
  for (const sn of list) {
    const m = /^[\s]*([+-]?)(\d*)/.exec(sn.id.toString('latin1'));
    let v = m && m[2] ? BigInt(m[2]) : 0n;
    if (v >= 1n << 64n) v = (1n << 64n) - 1n; // ULONG_MAX on overflow
    if (m?.[1] === '-' && v !== 0n) v = (1n << 64n) - v;
    if (v > max) max = v;
  }
  return Buffer.from(String((max + 1n) & ((1n << 64n) - 1n)));
}

export function planCreate(dev: BlockDevice, name: string, now: { sec: number; nsec: number }): SnapshotPlan {
  const { model, list, tableBytes } = open(dev, 'create');
  const h = model.h;
  if (list.length >= MAX_SNAPSHOTS) throw new SnapshotErrno('File too large', 'EFBIG');
  if (h.l1Size === 0) throw new PlanRefusal('instar cannot snapshot a qcow2 image without an L1 table; nothing was written');
  // qemu-img copies the name into a 256-byte buffer.
  let nameBytes = Buffer.from(name, 'utf8');
  if (nameBytes.length > 255) nameBytes = nameBytes.subarray(0, 255);
  const l1Offset = allocClusters(model.refs, h.l1Size * 8);
  model.writeL1(BigInt(l1Offset), model.activeL1, 'fresh');
  try {
    model.updateSnapshotRefcount(h.l1TableOffset, h.l1Size, 1, model.activeL1);
  } catch (e) {
    // qemu stops there, keeping what it changed so far (leaked clusters, COPIED flags cleared)
    // and not undoing it: instar writes the same, and reports qemu's EINVAL.
    if (!(e instanceof RefcountRangeError)) throw e;
    return { ...model.plan(), refcountOverflow: true };
  }
  list.push({
    l1TableOffset: BigInt(l1Offset),
    l1Size: h.l1Size,
    id: newSnapshotId(list),
    name: nameBytes,
    dateSec: now.sec,
    dateNsec: now.nsec,
    vmClockNsec: 0n,
    vmStateSize: 0n,
    diskSize: (h.size / 512n) * 512n,
    icount: 0n,
    unknownExtra: Buffer.alloc(0),
  });
  writeSnapshots(model, list, tableBytes);
  return model.plan();
}

const matches = (b: Buffer, s: string | undefined) => s === undefined || b.equals(Buffer.from(s, 'utf8'));

/** find_snapshot_by_id_and_name: the first entry matching every given field. */
function findByIdAndName(list: readonly SnapshotEntry[], id: string | undefined, name: string | undefined): number {
  return list.findIndex((sn) => matches(sn.id, id) && matches(sn.name, name));
}

/** find_snapshot_by_id_or_name (qcow2's goto): by id first, then by name. */
export function findByIdOrName(list: readonly SnapshotEntry[], idOrName: string): number {
  const byId = findByIdAndName(list, idOrName, undefined);
  return byId >= 0 ? byId : findByIdAndName(list, undefined, idOrName);
}

function validSnapshotL1(h: Qcow2Header, sn: SnapshotEntry): void {
  validateTable(h, sn.l1TableOffset, sn.l1Size, 8, MAX_L1_BYTES, 'Snapshot L1 table');
}

/** Returns undefined when no snapshot has that id or name (the host words it per version). */
export function planDelete(dev: BlockDevice, idOrName: string): SnapshotPlan | undefined {
  const h = parseHeader(dev);
  // qemu-img's bdrv_snapshot_find goes by name only, before the driver runs (whatever the
  // image's features); the driver then deletes the first entry with that id and name.
  const found = readSnapshotTable(dev, h).list.find((sn) => matches(sn.name, idOrName));
  if (!found) return undefined;
  const { model, list, tableBytes } = open(dev, 'delete');
  const index = list.findIndex((sn) => sn.id.equals(found.id) && sn.name.equals(found.name));
  const [sn] = list.splice(index, 1);
  validSnapshotL1(model.h, sn);
  writeSnapshots(model, list, tableBytes);
  model.updateSnapshotRefcount(sn.l1TableOffset, sn.l1Size, -1);
  freeClusters(model.refs, Number(sn.l1TableOffset), sn.l1Size * 8);
  // The active tables' COPIED flags, now that the snapshot's references are gone.
  model.updateSnapshotRefcount(model.h.l1TableOffset, model.h.l1Size, 0, model.activeL1);
  return model.plan();
}

/** Throws SnapshotErrno ENOENT when no snapshot has that id or name. */
export function planApply(dev: BlockDevice, idOrName: string, backingSize?: number): SnapshotPlan {
  const { model, list } = open(dev, 'apply');
  const h = model.h;
  const index = findByIdOrName(list, idOrName);
  if (index < 0) throw new SnapshotErrno('No such file or directory', 'ENOENT');
  const sn = list[index];
  validSnapshotL1(h, sn);
  if (sn.diskSize !== (h.size / 512n) * 512n) {
    // qemu truncates to the snapshot's size first, then applies it to the truncated image.
    const truncate = truncateForApply(dev, sn.diskSize, h.backingFileOffset !== 0n ? backingSize : undefined);
    if ('failed' in truncate) throw new SnapshotErrno(truncate.failed.message, truncate.failed.errno, truncate.failed.report);
    const rest = planApply(truncate.after, idOrName, backingSize);
    return { ...rest, steps: [...truncate.steps, ...rest.steps] };
  }
  if (sn.l1Size > h.l1Size) {
    // qemu grows the active L1 table to the snapshot's first, then applies it to the grown image.
    const grow = growL1ForApply(dev, sn.l1Size);
    const rest = planApply(grow.after, idOrName, backingSize);
    return { ...rest, steps: [...grow.steps, ...rest.steps] };
  }
  const snL1 = model.readL1(sn.l1TableOffset, sn.l1Size);
  while (snL1.length < h.l1Size) snL1.push(0n);
  // References for the snapshot's clusters before the active table points at them.
  try {
    model.updateSnapshotRefcount(sn.l1TableOffset, sn.l1Size, 1);
  } catch (e) {
    // As in create: qemu keeps what it changed and fails with EINVAL.
    if (!(e instanceof RefcountRangeError)) throw e;
    return { ...model.plan(), refcountOverflow: true };
  }
  model.writeL1(h.l1TableOffset, snL1, 'table');
  model.updateSnapshotRefcount(h.l1TableOffset, h.l1Size, -1, model.activeL1);
  snL1.forEach((e, i) => { model.activeL1[i] = e; });
  model.updateSnapshotRefcount(h.l1TableOffset, h.l1Size, 0, model.activeL1);
  return model.plan();
}

/** A planner's outcome as the capability's answer; SnapshotErrno (qemu's failure) included. */
function outcome(plan: () => SnapshotPlan | undefined): SnapshotChangePlan {
  try {
    const p = plan();
    if (p?.refcountOverflow) return { errno: 'EINVAL', message: 'Invalid argument', steps: p.steps };
    return p ? { steps: p.steps } : { notFound: true };
  } catch (e) {
    if (e instanceof SnapshotErrno) return { errno: e.errno ?? 'EIO', message: e.message, ...(e.report === undefined ? {} : { report: e.report }) };
    throw e;
  }
}

/**
 * Runs a planner, turning its failures into the capability's answers. An image with persistent
 * bitmaps (or a stale bitmaps extension) gets qemu's writable open and close around it
 * (bitmap-session.ts), also when qemu's command fails; qemu's generic goto refuses to apply a
 * snapshot while the image has bitmaps, before its driver looks for the snapshot.
 */
function answer(dev: BlockDevice, action: 'create' | 'delete' | 'apply', plan: (dev: BlockDevice) => SnapshotPlan | undefined): SnapshotChangePlan {
  try {
    if (!openWritesBitmaps(dev)) return outcome(() => plan(dev));
    // What the planner answered, kept for after the close (the session plans the close).
    const last: { r: SnapshotChangePlan } = { r: { notFound: true } };
    const session = aroundBitmaps(dev, (opened, bitmaps): SessionChange => {
      if (action === 'apply' && bitmaps.length > 0) {
        last.r = { errno: 'EBUSY', message: 'Device has active dirty bitmaps' };
        return { failed: 'busy' };
      }
      let planned: SnapshotPlan | undefined;
      const r = outcome(() => (planned = plan(opened)));
      last.r = r;
      if ('refused' in r) throw new PlanRefusal(r.refused);
      if ('errno' in r) return { failed: r.message, steps: r.steps };
      if ('notFound' in r) return { failed: 'not found' };
      return { steps: r.steps, freeClusterIndex: planned?.freeClusterIndex };
    });
    const r = last.r;
    if ('errno' in r) return { ...r, steps: session.steps };
    if ('notFound' in r) return { notFound: true, steps: session.steps };
    return { steps: session.steps };
  } catch (e) {
    if (e instanceof PlanRefusal) return { refused: e.message };
    throw e;
  }
}

/** The qcow2 driver's snapshot capability. */
export const qcow2Snapshots: SnapshotCapability = {
  create: (dev, name, now) => answer(dev, 'create', (d) => planCreate(d, name, now)),
  delete: (dev, name) => answer(dev, 'delete', (d) => planDelete(d, name)),
  apply: (dev, idOrName, backingSize) => answer(dev, 'apply', (d) => planApply(d, idOrName, backingSize)),
};
