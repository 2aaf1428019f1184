// compat=0.10 of an image with zero clusters: qemu's qcow2_expand_zero_clusters (block/
// qcow2-cluster.c) before the header goes to version 2, which has no zero flag. Over the active
// L1 table, then each snapshot's: a zero cluster without data becomes unallocated when there is
// no backing file, else a new cluster of zeros (counted as often as its L2 table is); a zero
// cluster with data gets its data zeroed and keeps it. The entry's COPIED flag follows the L2
// table's refcount (qemu's choice). Progress: one step per L1 entry of all tables.
//
// Crash order: the file grown, the data clusters zeroed, new clusters counted, then the L2
// tables: each entry reads as zeros before and after, so any prefix is the same disk.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { readAt } from '../bytes.ts';
import type { Qcow2Header } from './header.ts';
import { PlanRefusal, RefcountModel } from './refcount-update.ts';
import { allocClusters } from './allocator.ts';
import { refcountSteps } from './refcount-order.ts';
import type { AmendProgress } from './amend-progress.ts';

const OFFSET_MASK = 0x00fffffffffffe00n;
const COMPRESSED = 1n << 62n;
const COPIED = 1n << 63n;
const ZERO = 1n;
/** Most bytes of changed L2 tables one plan holds. */
const MAX_HELD_BYTES = 256 * 1024 * 1024;

export interface L1Table {
  offset: bigint;
  size: number;
}

/**
 * The writes that leave no zero cluster in `tables` (the active L1 first). `hint`: qemu's
 * free_cluster_index here; undefined when it is not known (after a truncate in the same session),
 * so that a new cluster could land elsewhere than instar would place it: refused then.
 */
export function planExpandZeroClusters(dev: BlockDevice, h: Qcow2Header, tables: readonly L1Table[], backed: boolean, progress: AmendProgress, hint: number | undefined): RepairStep[] {
  const cs = h.clusterSize;
  const refs = new RefcountModel(dev, h);
  refs.freeClusterIndex = hint ?? 0;
  const changed = new Map<number, Buffer>();
  const zeroed: number[] = [];
  const total = tables.reduce((n, t) => n + t.size, 0);
  let visited = 0;
  for (const t of tables) {
    const l1 = readAt(dev, t.offset, t.size * 8);
    for (let i = 0; i < t.size; i++) {
      const l2 = Number(l1.readBigUInt64BE(i * 8) & OFFSET_MASK);
      // A table seen before has no zero cluster left: nothing to read again.
      if (l2 !== 0 && !changed.has(l2)) {
        if (l2 % cs !== 0) throw new PlanRefusal('instar cannot amend this qcow2 image: an L1 entry is not cluster-aligned (qemu would mark the image corrupt); nothing was written');
        const l2Refcount = refs.get(l2 / cs);
        const table = readAt(dev, l2, cs);
        for (let j = 0; j < cs / 8; j++) {
          const entry = table.readBigUInt64BE(j * 8);
          if ((entry & COMPRESSED) !== 0n || (entry & ZERO) === 0n) continue;
          let offset = Number(entry & OFFSET_MASK);
          if (offset === 0) {
            if (!backed) {
              table.writeBigUInt64BE(0n, j * 8);
              continue;
            }
            if (hint === undefined) throw new PlanRefusal('instar cannot amend this qcow2 image: its zero clusters need new clusters after a size change; nothing was written');
            offset = allocClusters(refs, cs);
            // A shared L2 table: the new cluster is counted once per reference to the table.
            if (l2Refcount > 1) refs.update(offset, cs, l2Refcount - 1, false, { discard: false });
          } else if (offset % cs !== 0) {
            throw new PlanRefusal('instar cannot amend this qcow2 image: a zero cluster\'s offset is not cluster-aligned (qemu would mark the image corrupt); nothing was written');
          }
          zeroed.push(offset);
          table.writeBigUInt64BE(BigInt(offset) | (l2Refcount === 1 ? COPIED : 0n), j * 8);
        }
        if ((changed.size + 1) * cs > MAX_HELD_BYTES) throw new PlanRefusal('instar cannot amend this qcow2 image: too many L2 tables to rewrite; nothing was written');
        changed.set(l2, table);
      }
      visited++;
      progress.report(visited, total);
    }
  }
  const tableWrites: RepairStep[] = [];
  for (const [pos, table] of changed) if (!table.equals(readAt(dev, pos, cs))) tableWrites.push({ kind: 'write', pos, bytes: table });
  // Clusters side by side are zeroed in one step (new clusters mostly are).
  const zeros: { kind: 'zero'; pos: number; length: number }[] = [];
  for (const pos of [...new Set(zeroed)].sort((a, b) => a - b)) {
    const last = zeros.at(-1);
    if (last && last.pos + last.length === pos) last.length += cs;
    else zeros.push({ kind: 'zero', pos, length: cs });
  }
  const steps = refcountSteps(dev, refs, [], zeros);
  if (tableWrites.length > 0) steps.push(...tableWrites, { kind: 'barrier' });
  return steps;
}
