// Where qemu puts a grown qcow2 refcount table (alloc_refcount_block → qcow2_refcount_area, in
// block/qcow2-refcount.c): the area starts at the first refcount range no block covers yet (past
// the cluster being counted and the block just allocated for it), holds one new refcount block
// per range from there to the end of the area, then the new table; everything in the area counts
// itself. The table is sized "generously" (half again as many entries), as qemu does. Pure
// arithmetic: RefcountModel (refcount-update.ts) applies it.
import { PlanRefusal } from './refcount-update.ts';

/** qemu's QCOW_MAX_REFTABLE_SIZE: a larger refcount table fails with EFBIG. */
const MAX_TABLE_BYTES = 8 * 1024 * 1024;

export interface RetiredTable {
  offset: number;
  /** The table as qemu last wrote it (its clusters keep these bytes once freed). */
  bytes: Buffer;
}

export interface GrowthLayout {
  /** First cluster of the area (a multiple of the clusters one refcount block covers). */
  start: number;
  /** First cluster after it. */
  end: number;
  tableCluster: number;
  tableEntries: number;
  /** The area's new refcount blocks: [table index, cluster]. */
  newBlocks: [number, number][];
}

/**
 * qcow2_refcount_metadata_size: refcount blocks needed for `clusters` clusters plus the blocks
 * and table clusters themselves (a fixed point); `generous` adds room for half the table again.
 */
export function refcountBlocksFor(clusters: number, clusterSize: number, perBlock: number, generous: boolean): number {
  const perTableCluster = clusterSize / 8;
  let blocks = 0;
  let table = 0;
  for (let n = 0, last = -1; n !== last;) {
    last = n;
    blocks = Math.ceil((clusters + table + blocks) / perBlock);
    table = Math.ceil(blocks / perTableCluster);
    n = clusters + blocks + table;
    if (n === last && generous) {
      clusters += Math.ceil(table / 2);
      n = 0;
      generous = false;
    }
  }
  return blocks;
}

/** The layout for counting `cluster` when the refcount table has `oldEntries` entries. */
export function growthLayout(clusterSize: number, perBlock: number, oldEntries: number, cluster: number, newBlock: number): GrowthLayout {
  const perTableCluster = clusterSize / 8;
  const blocksUsed = Math.ceil(Math.max(cluster + 1, newBlock + 1) / perBlock);
  const start = blocksUsed * perBlock;
  const total = refcountBlocksFor(start, clusterSize, perBlock, true);
  const tableEntries = Math.ceil((total + Math.ceil(total / 2)) / perTableCluster) * perTableCluster;
  if (total > MAX_TABLE_BYTES || tableEntries * 8 > MAX_TABLE_BYTES || tableEntries <= oldEntries) {
    throw new PlanRefusal('the refcount table would grow past qemu\'s limit (File too large); nothing was written');
  }
  const newBlocks: [number, number][] = [];
  for (let i = blocksUsed; i < total; i++) newBlocks.push([i, start + (i - blocksUsed)]);
  const tableCluster = start + newBlocks.length;
  const end = tableCluster + tableEntries / perTableCluster;
  if (end * clusterSize > Number.MAX_SAFE_INTEGER) throw new PlanRefusal('the grown refcount table would lie past 2^53 bytes; nothing was written');
  return { start, end, tableCluster, tableEntries, newBlocks };
}
