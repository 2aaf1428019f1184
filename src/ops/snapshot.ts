// The guest half of `snapshot`. -l: the image's internal snapshots, as the driver reports them
// (formats without snapshots list none, as qemu's bdrv_snapshot_list fails quietly). -c/-d/-a:
// the driver's snapshot capability (qcow2: formats/qcow2/snapshot-plan.ts) plans the writes,
// applied here by formats/repair.ts on the writable device; the host fsyncs after the guest exits.
import { ImageError, type SnapshotInfo } from '../formats/types.ts';
import { backingSize } from './backing-size.ts';
import { applyRepair } from '../formats/repair.ts';
import { findDriver } from '../formats/registry.ts';
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

export function snapshotChangeOp(options: Record<string, unknown>, ctx: OpContext): SnapshotChangeResult {
  const opts = options as SnapshotOptions;
  const image = openTree(ctx, 0, opts);
  const format = image.format;
  const input = ctx.devices[0];
  if (!input) throw new ImageError('no input device');
  const name = String(opts.name ?? '');
  const capability = findDriver(format)?.snapshots;
  if (!capability) {
    // qemu's generic layer: create fails with ENOTSUP, delete finds nothing, apply has no driver.
    if (opts.action === 'create') return { format, errno: 'ENOTSUP', message: 'Operation not supported' };
    if (opts.action === 'delete') return { format, 'not-found': true };
    return { format, unsupported: true };
  }
  const plan =
    opts.action === 'create' ? capability.create(input.dev, name, opts.now ?? { sec: 0, nsec: 0 })
      : opts.action === 'delete' ? capability.delete(input.dev, name)
        : capability.apply(input.dev, name, backingSize(ctx, image.info()['backing-filename-format'], opts));
  if ('notFound' in plan) {
    if (plan.steps) applyRepair(input.dev, plan.steps);
    return { format, 'not-found': true };
  }
  if ('refused' in plan) return { format, refused: plan.refused };
  if ('errno' in plan) {
    if (plan.steps) applyRepair(input.dev, plan.steps);
    if (plan.report) ctx.warn?.({ text: plan.report, prefixed: true });
    return { format, errno: plan.errno, message: plan.message };
  }
  applyRepair(input.dev, plan.steps);
  return { format, done: true };
}
