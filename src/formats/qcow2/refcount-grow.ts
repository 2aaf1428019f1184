// The sizes of a qcow2 refcount area (qcow2_refcount_area in block/qcow2-refcount.c): refcount
// blocks and a new refcount table placed from a start cluster on, that count themselves and
// `additional` clusters after them. alloc_refcount_block grows a full table this way, starting
// at the first refcount range no block covers yet, sized "generously" (half again as many
// entries); a falloc/full resize asks for an exact area for its data. Pure arithmetic:
// RefcountModel (refcount-update.ts) places the blocks.
import { PlanRefusal } from './refcount-update.ts';

/** qemu's QCOW_MAX_REFTABLE_SIZE: a larger refcount table fails with EFBIG. */
const MAX_TABLE_BYTES = 8 * 1024 * 1024;

export interface RetiredTable {
  offset: number;
  /** The table as qemu last wrote it (its clusters keep these bytes once freed). */
  bytes: Buffer;
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

/** Refcount blocks (in all) and table entries of a refcount area covering `clusters` clusters. */
export function areaSize(clusterSize: number, perBlock: number, clusters: number, exact: boolean): { blocks: number; tableEntries: number } {
  const perTableCluster = clusterSize / 8;
  const blocks = refcountBlocksFor(clusters, clusterSize, perBlock, !exact);
  const wanted = exact ? blocks : blocks + Math.ceil(blocks / 2);
  const tableEntries = Math.ceil(wanted / perTableCluster) * perTableCluster;
  if (blocks > MAX_TABLE_BYTES || tableEntries * 8 > MAX_TABLE_BYTES) {
    throw new PlanRefusal('the refcount table would grow past qemu\'s limit (File too large); nothing was written');
  }
  if ((clusters + blocks + tableEntries / perTableCluster) * clusterSize > Number.MAX_SAFE_INTEGER) {
    throw new PlanRefusal('the refcount structures would lie past 2^53 bytes; nothing was written');
  }
  return { blocks, tableEntries };
}

/**
 * alloc_refcount_block's growth for counting `cluster` (its new block is `newBlock`): the area
 * starts after every range the two need, with no additional clusters, sized generously.
 */
export function growthStart(perBlock: number, cluster: number, newBlock: number): number {
  return Math.ceil(Math.max(cluster + 1, newBlock + 1) / perBlock) * perBlock;
}
