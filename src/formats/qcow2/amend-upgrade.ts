// compat=1.1 of a version 2 image whose snapshot entries lack the extra data version 3 requires
// (VM state size and disk size): qemu's qcow2_upgrade rewrites the snapshot table first
// (qcow2_write_snapshots: every entry with its extra data, in new clusters; the header's
// nb_snapshots and snapshots_offset pointed at it; the old table freed and discarded), then the
// header as version 3. Planned on SnapshotModel, whose steps are crash-ordered (the new table
// written and counted before the header names it, the old one freed after).
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import type { Qcow2Header } from './header.ts';
import { SnapshotModel, writeSnapshots } from './snapshot-model.ts';
import { readSnapshotTable } from './snapshot-table.ts';

export interface SnapshotTableRewrite {
  steps: RepairStep[];
  snapshotsOffset: bigint;
  /** qemu's free_cluster_index afterwards (the next allocation searches from there). */
  freeClusterIndex: number;
}

export function rewriteSnapshotTable(dev: BlockDevice, h: Qcow2Header): SnapshotTableRewrite {
  const { list, tableBytes } = readSnapshotTable(dev, h);
  const model = new SnapshotModel(dev, h);
  const offset = writeSnapshots(model, list, tableBytes);
  const { steps } = model.plan();
  return { steps, snapshotsOffset: BigInt(offset), freeClusterIndex: model.refs.freeClusterIndex };
}
