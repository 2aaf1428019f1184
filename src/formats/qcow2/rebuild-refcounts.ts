// qemu's rebuild_refcount_structure (check -r all when a refcount block entry is broken or a
// referenced cluster's stored refcount is 0): a new refcount table and new refcount blocks, built
// from the references the check counted, placed by qemu's first-fit allocator over those counts
// (alloc_clusters_imrt) so that the file comes out as qemu's does. Pure: it returns the new
// structure; the planner orders the writes. The old structure is left to the leak repair after it.
import { ImageError } from '../types.ts';
import { writeRefcount } from './refcount-entry.ts';

/** Host clusters a rebuild handles at most (its counts take a byte each, held twice). */
export const MAX_REBUILT_CLUSTERS = 64 * 1024 * 1024;

/** qemu's in-memory refcount table: one count per host cluster, growing as clusters are allocated. */
export class ClusterCounts {
  private small: Uint8Array;
  private big = new Map<number, number>();
  length: number;

  constructor(length: number) {
    if (length > MAX_REBUILT_CLUSTERS) throw new ImageError(`instar rebuilds refcounts of at most ${MAX_REBUILT_CLUSTERS} clusters`);
    this.length = length;
    this.small = new Uint8Array(Math.max(16, length));
  }

  get(k: number): number {
    if (k >= this.length) return 0;
    const v = this.small[k];
    return v === 255 ? this.big.get(k)! : v;
  }

  set(k: number, v: number): void {
    if (k >= this.length) this.grow(k + 1);
    if (v < 255) {
      this.small[k] = v;
      this.big.delete(k);
    } else {
      this.small[k] = 255;
      this.big.set(k, v);
    }
  }

  /** realloc_refcount_array: the new clusters count 0. */
  grow(length: number): void {
    if (length <= this.length) return;
    if (length > MAX_REBUILT_CLUSTERS) throw new ImageError(`instar rebuilds refcounts of at most ${MAX_REBUILT_CLUSTERS} clusters`);
    if (length > this.small.length) {
      const next = new Uint8Array(Math.min(MAX_REBUILT_CLUSTERS, Math.max(length, this.small.length * 2)));
      next.set(this.small);
      this.small = next;
    }
    this.length = length;
  }
}

export interface RebuiltStructure {
  /** Refcount block cluster per table index (0: none). */
  reftable: number[];
  reftableCluster: number;
  reftableClusters: number;
}

/**
 * Builds the new structure into `counts` (which gains the allocations) for a file of clusters of
 * `clusterSize` bytes holding `perBlock` refcounts per block.
 */
export function rebuildRefcounts(counts: ClusterCounts, clusterSize: number, perBlock: number): RebuiltStructure {
  const reftable: number[] = [];
  let entries = 0;
  const entriesPerCluster = clusterSize / 8;

  /** alloc_clusters_imrt: the first run of `count` free clusters at or after `from.v`, marked used. */
  const allocate = (count: number, from: { v: number }): number => {
    let cluster = from.v;
    let free = 0;
    let firstGap = true;
    for (; cluster < counts.length && free < count; cluster++) {
      if (counts.get(cluster) === 0) {
        free++;
        if (firstGap) {
          from.v = cluster;
          firstGap = false;
        }
      } else free = 0;
    }
    if (free < count) counts.grow(cluster + count - free);
    cluster -= free;
    for (let i = 0; i < count; i++) counts.set(cluster + i, 1);
    return cluster;
  };

  /** rebuild_refcounts_write_refblocks over [first, end): a block for every used cluster; whether the table grew. */
  const placeBlocks = (first: number, end: number): boolean => {
    const from = { v: 0 };
    let grown = false;
    for (let cluster = first; cluster < end; cluster++) {
      if (counts.get(cluster) === 0) continue;
      const index = Math.floor(cluster / perBlock);
      const start = index * perBlock;
      if (!(entries > index && reftable[index])) {
        // Never inside a block already placed (and written) before this one.
        if (from.v < start) from.v = start;
        const block = allocate(1, from);
        if (block >= end) end = block + 1;
        if (entries <= index) {
          entries = Math.ceil((index + 1) / entriesPerCluster) * entriesPerCluster;
          while (reftable.length < entries) reftable.push(0);
          grown = true;
        }
        reftable[index] = block;
      }
      cluster = start + perBlock - 1;
    }
    return grown;
  };

  placeBlocks(0, counts.length);
  let reftableCluster: number;
  let reftableClusters: number;
  let grown: boolean;
  do {
    reftableClusters = Math.ceil((entries * 8) / clusterSize);
    reftableCluster = allocate(reftableClusters, { v: 0 });
    grown = placeBlocks(reftableCluster, reftableCluster + reftableClusters);
  } while (grown);
  return { reftable, reftableCluster, reftableClusters };
}

/** Refcount block `index` as the counts give it. */
export function serializeBlock(counts: ClusterCounts, index: number, clusterSize: number, perBlock: number, bits: number): Buffer {
  const block = Buffer.alloc(clusterSize);
  const start = index * perBlock;
  const end = Math.min(counts.length, start + perBlock);
  for (let k = start; k < end; k++) {
    const v = counts.get(k);
    if (v !== 0) writeRefcount(block, k - start, bits, v);
  }
  return block;
}
