// snapshot -a of a snapshot whose disk size differs from the image's: qemu's qcow2_snapshot_goto
// first truncates the image to the snapshot's size (blk_truncate: exact, no preallocation, the
// same writes as `resize`, shrinking included), then applies the snapshot to the truncated image.
// instar plans the truncate with resize.ts, then the apply over a view of the file as those
// writes leave it, and writes both in that order: each part is crash safe on its own, and between
// them the file is a valid image of the new size (qemu's own state at that point).
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { ReplayedDevice } from '../replayed-device.ts';
import { readAt } from '../bytes.ts';
import { parseHeader } from './header.ts';
import { PlanRefusal, RefcountModel } from './refcount-update.ts';
import { planTruncate } from './resize.ts';
import { MAX_REFCOUNT_BYTES } from './resize-shrink.ts';
import { growL1Table } from './l1-grow.ts';
import type { GrowState } from './resize-prealloc.ts';

/** qemu's truncate failed before writing anything: its errno, strerror text, and its own message. */
export interface TruncateFailure {
  errno: string;
  message: string;
  report: string;
}

/** qcow2_co_truncate's failures that snapshot -a reports, by the message it prints first. */
const TRUNCATE_ERRNO: Record<string, [string, string]> = {
  "Can't resize a v2 image which has snapshots": ['ENOTSUP', 'Operation not supported'],
  'The new size must be a multiple of 512': ['EINVAL', 'Invalid argument'],
  'Failed to grow the L1 table: File too large': ['EFBIG', 'File too large'],
};

/**
 * The truncate to `size` qemu makes before applying a snapshot, and the device to plan the apply
 * on; throws PlanRefusal for what instar does not do (qemu would fail or write more).
 * `backingSize`: the backing image's virtual size, when the image has one.
 */
export function truncateForApply(dev: BlockDevice, size: bigint, backingSize: number | undefined): { steps: RepairStep[]; after: BlockDevice } | { failed: TruncateFailure } {
  const refuse = (why: string) => new PlanRefusal(`instar cannot apply a snapshot of another disk size to this qcow2 image (${why}); nothing was written`);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw refuse('the snapshot\'s size is too large');
  // A backing file longer than the image has the grown area zeroed (resize-zero.ts), as resize does.
  const plan = planTruncate(dev, { newSize: Number(size), preallocation: 'off', ...(backingSize === undefined ? {} : { backingSize }) });
  // Only a failure before any write (a bitmap session's close writes even then: not mapped).
  const errno = 'error' in plan && !(plan as { written?: unknown[] }).written?.length && Object.hasOwn(TRUNCATE_ERRNO, plan.error) ? TRUNCATE_ERRNO[plan.error] : undefined;
  if (errno) return { failed: { errno: errno[0], message: errno[1], report: (plan as { error: string }).error } };
  if ('error' in plan) throw refuse(plan.error.replace(/^instar cannot resize this qcow2 image \((.*)\); nothing was written$/, '$1'));
  return { steps: plan.steps, after: new ReplayedDevice(dev, plan.steps) };
}

/**
 * qcow2_snapshot_goto's qcow2_grow_l1_table (exact size) for a snapshot whose L1 table has more
 * entries than the active one, and the device to plan the apply on: the new table, the header
 * switched to it, the old table's clusters freed (not discarded), in that order.
 */
export function growL1ForApply(dev: BlockDevice, entries: number): { steps: RepairStep[]; after: BlockDevice } {
  const h = parseHeader(dev);
  const refs = new RefcountModel(dev, h, { maxBlockBytes: MAX_REFCOUNT_BYTES });
  const state: GrowState = { refs, l1: readAt(dev, h.l1TableOffset, h.l1Size * 8), l1Offset: Number(h.l1TableOffset), fileSize: dev.size };
  const grown = growL1Table(state, h.clusterSize, entries);
  if (!Array.isArray(grown)) {
    throw new PlanRefusal(`instar cannot grow the L1 table to apply this snapshot (${'error' in grown ? grown.error : grown.refused}); nothing was written`);
  }
  const steps: RepairStep[] = [...grown, ...refs.flush(), { kind: 'barrier' }];
  return { steps, after: new ReplayedDevice(dev, steps) };
}
