// The guest half of `snapshot`. -l: the image's internal snapshots, as the driver reports them
// (formats without snapshots list none, as qemu's bdrv_snapshot_list fails quietly). -c/-d/-a on
// qcow2: the planner (formats/qcow2/snapshot-plan.ts) turns the image into steps, applied here by
// formats/repair.ts on the writable device; the host fsyncs after the guest exits.
import { ImageError, type BlockDevice, type SnapshotInfo } from '../formats/types.ts';
import { applyRepair } from '../formats/repair.ts';
import { PlanRefusal, RefcountRangeError } from '../formats/qcow2/refcount-update.ts';
import { planApply, planCreate, planDelete, SnapshotErrno, type SnapshotPlan } from '../formats/qcow2/snapshot-plan.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { OpContext } from './types.ts';

export type SnapshotAction = 'create' | 'delete' | 'apply';

export interface SnapshotOptions extends OpenTreeOptions {
  action?: SnapshotAction;
  name?: string;
  /** The time qemu-img stamps a new snapshot with (the host's clock). */
  now?: { sec: number; nsec: number };
}

export type SnapshotListResult = { format: string; snapshots: SnapshotInfo[] };

/**
 * What a mutating action ended with: done; `errno` = qemu's driver failed with that errno (the host
 * words it per action and version); `not-found`; `unsupported` = the format has no snapshots;
 * `refused` = instar will not do what qemu would, nothing written.
 */
export type SnapshotChangeResult =
  | { format: string; done: true }
  | { format: string; errno: string; message: string }
  | { format: string; 'not-found': true }
  | { format: string; unsupported: true }
  | { format: string; refused: string };

export function snapshotListOp(options: Record<string, unknown>, ctx: OpContext): SnapshotListResult {
  const image = openTree(ctx, 0, options as SnapshotOptions);
  return { format: image.format, snapshots: image.info().snapshots ?? [] };
}

/** Grows the file to what the plan writes (qemu's writes past the end grow it the same way). */
function grownDevice(dev: BlockDevice, size: number): BlockDevice {
  if (size <= dev.size) return dev;
  const truncate = (dev as { truncate?: (n: number) => void }).truncate;
  if (!truncate) throw new ImageError('the image cannot grow');
  truncate(size);
  return { size, read: (b, p) => dev.read(b, p), write: (b, p) => dev.write?.(b, p) };
}

export function snapshotChangeOp(options: Record<string, unknown>, ctx: OpContext): SnapshotChangeResult {
  const opts = options as SnapshotOptions;
  const image = openTree(ctx, 0, opts);
  const format = image.format;
  const input = ctx.devices[0];
  if (!input) throw new ImageError('no input device');
  const name = String(opts.name ?? '');
  if (format !== 'qcow2') {
    // qemu's generic layer: create fails with ENOTSUP, delete finds nothing, apply has no driver.
    if (opts.action === 'create') return { format, errno: 'ENOTSUP', message: 'Operation not supported' };
    if (opts.action === 'delete') return { format, 'not-found': true };
    return { format, unsupported: true };
  }
  let plan: SnapshotPlan | undefined;
  try {
    if (opts.action === 'create') plan = planCreate(input.dev, name, opts.now ?? { sec: 0, nsec: 0 });
    else if (opts.action === 'delete') plan = planDelete(input.dev, name);
    else plan = planApply(input.dev, name);
  } catch (e) {
    // qemu's create fails the same way (after leaking the clusters it had allocated).
    if (e instanceof RefcountRangeError && opts.action === 'create') return { format, errno: 'EINVAL', message: 'Invalid argument' };
    if (e instanceof PlanRefusal) return { format, refused: e.message };
    if (e instanceof SnapshotErrno) return { format, errno: e.errno ?? 'EIO', message: e.message };
    throw e;
  }
  if (!plan) return { format, 'not-found': true };
  applyRepair(grownDevice(input.dev, plan.fileSize), plan.steps);
  return { format, done: true };
}
