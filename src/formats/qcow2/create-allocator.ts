// qemu's cluster allocator as a new qcow2 image meets it (qcow2_alloc_clusters over
// alloc_clusters_noref, update_refcount and alloc_refcount_block), replayed in memory so that
// create puts every cluster where qemu puts it. A new refcount block goes to the first free
// cluster; qemu then undoes the allocation in progress (-EAGAIN) and searches again, which
// is why a block can land inside the range it was allocated for. Refcounts are kept per cluster
// (an image being created has at most a few million clusters of metadata).
import { ImageError } from '../types.ts';
import { refcountBlocksFor } from './refcount-grow.ts';

export class CreateAllocator {
  /** Refcount of each cluster (0 past the end of the array). */
  readonly refcounts: number[] = [];
  /** Refcount table: the cluster index of each refcount block, 0 when there is none. */
  table: number[];
  /** Where the refcount table is (cluster index) and how many clusters it has. */
  tableCluster = 1;
  tableClusters = 1;
  private freeIndex = 0;
  /** Refcount tables a growth replaced, in order: where each was and the entries it had then. */
  readonly retired: { cluster: number; clusters: number; entries: number[] }[] = [];
  private readonly blockBits: number;

  constructor(readonly clusterSize: number, refcountOrder: number, firstBlock: number) {
    // Entries per block: cluster bits + 3 - refcount order, as a power of two.
    this.blockBits = Math.log2(clusterSize) + 3 - refcountOrder;
    this.table = new Array<number>(clusterSize / 8).fill(0);
    this.table[0] = firstBlock;
  }

  private refcount(cluster: number): number {
    const index = Math.floor(cluster / 2 ** this.blockBits);
    if (index >= this.table.length || this.table[index] === 0) return 0;
    return this.refcounts[cluster] ?? 0;
  }

  /** qcow2_get_last_cluster: the highest cluster in use below `end`, -1 when none. */
  lastUsed(end: number): number {
    for (let c = end - 1; c >= 0; c--) if (this.refcount(c) !== 0) return c;
    return -1;
  }

  /**
   * qcow2_refcount_area with an exact size: from cluster `start` (the end of the file), new
   * refcount blocks and a new refcount table that cover themselves and `additional` clusters after
   * them; the old table is freed. Returns the first cluster after the area.
   */
  refcountArea(start: number, additional: number): number {
    const cs = this.clusterSize;
    const perTableCluster = cs / 8;
    // qcow2_refcount_metadata_size: blocks and table clusters that also count themselves.
    const blocks = refcountBlocksFor(start + additional, cs, this.perBlock, false);
    const tableSize = Math.ceil(blocks / perTableCluster) * perTableCluster;
    const table = new Array<number>(tableSize).fill(0);
    this.table.forEach((block, i) => {
      if (i < tableSize) table[i] = block;
    });
    return this.installArea(table, start, blocks);
  }

  /**
   * alloc_refcount_block's growth of a full refcount table: qcow2_refcount_area (not exact: the
   * table gets half again as many entries as needed) placed after the refcount blocks in use
   * would cover, with `block` hooked at `index`; the old table is freed.
   */
  private growTable(cluster: number, index: number, block: number): void {
    const perTableCluster = this.clusterSize / 8;
    const blocksUsed = Math.ceil(Math.max(cluster + 1, block + 1) / this.perBlock);
    const start = blocksUsed * this.perBlock;
    // qcow2_refcount_metadata_size with a generous increase: once settled, room for half the table again.
    const blocks = refcountBlocksFor(start, this.clusterSize, this.perBlock, true);
    const tableSize = Math.ceil((blocks + Math.ceil(blocks / 2)) / perTableCluster) * perTableCluster;
    if (tableSize * 8 > 8 * 1024 * 1024) throw new ImageError('instar cannot grow the refcount table past qemu\'s limit (File too large)', 'EFBIG');
    const table = new Array<number>(tableSize).fill(0);
    this.table.forEach((b, i) => (table[i] = b));
    // What qemu had written into the old table, entry by entry, stays in its clusters until reused.
    this.retired.push({ cluster: this.tableCluster, clusters: this.tableClusters, entries: [...this.table] });
    table[index] = block;
    this.installArea(table, start, blocks);
  }

  /**
   * The end of qcow2_refcount_area: from cluster `start`, the refcount blocks `table` still lacks
   * up to entry `blocks`, then the table itself, every cluster of the area in use; the old table
   * freed. Returns the first cluster after the area.
   */
  private installArea(table: number[], start: number, blocks: number): number {
    const perTableCluster = this.clusterSize / 8;
    const areaIndex = Math.floor(start / this.perBlock);
    let newBlocks = 0;
    for (let i = areaIndex; i < blocks; i++) if (table[i] === 0) newBlocks++;
    const tableCluster = start + newBlocks;
    const end = tableCluster + table.length / perTableCluster;
    let next = start;
    for (let i = areaIndex; i < blocks; i++) {
      if (table[i] === 0) table[i] = next++;
      const first = Math.max(i * this.perBlock, start);
      const last = Math.min(end, (i + 1) * this.perBlock);
      for (let c = first; c < last; c++) this.refcounts[c] = 1;
    }
    const old = { cluster: this.tableCluster, clusters: this.tableClusters };
    this.table = table;
    this.tableCluster = tableCluster;
    this.tableClusters = table.length / perTableCluster;
    for (let c = old.cluster; c < old.cluster + old.clusters; c++) this.update(c, 1, -1);
    return end;
  }

  /** qcow2_alloc_clusters_at for clusters whose refcount blocks exist. */
  allocAt(first: number, count: number): void {
    if (!this.update(first, count, 1)) throw new ImageError('instar could not place the preallocated clusters; nothing was written');
  }

  /** alloc_clusters_noref: the first run of `count` free clusters from the free-cluster hint. */
  private findFree(count: number): number {
    let run = 0;
    while (run < count) {
      const cluster = this.freeIndex++;
      if (cluster > 2 ** 40) throw new ImageError('instar found no free cluster for the new image; nothing was written');
      run = this.refcount(cluster) === 0 ? run + 1 : 0;
    }
    return this.freeIndex - count;
  }

  /** alloc_refcount_block: false when it had to allocate a block first (the caller's -EAGAIN). */
  private ensureBlock(cluster: number): boolean {
    const index = Math.floor(cluster / 2 ** this.blockBits);
    if (index < this.table.length && this.table[index] !== 0) return true;
    const block = this.findFree(1);
    if (index >= this.table.length) {
      // The block is made first (self-describing, or counted where it is), then the table grows.
      if (Math.floor(block / 2 ** this.blockBits) === index) this.refcounts[block] = 1;
      else if (!this.update(block, 1, 1)) return false;
      this.growTable(cluster, index, block);
      return false;
    }
    if (Math.floor(block / 2 ** this.blockBits) === index) {
      // The block describes itself.
      this.table[index] = block;
      this.refcounts[block] = 1;
      return false;
    }
    if (!this.update(block, 1, 1)) return false;
    this.table[index] = block;
    return false;
  }

  /** update_refcount: false on -EAGAIN, with the clusters done so far undone. */
  private update(first: number, count: number, addend: number): boolean {
    let lastIndex = -1;
    for (let i = 0; i < count; i++) {
      const cluster = first + i;
      const index = Math.floor(cluster / 2 ** this.blockBits);
      if (index !== lastIndex) {
        if (!this.ensureBlock(cluster)) {
          // qemu retries the same clusters first: the hint goes back to the start of the range.
          if (this.freeIndex > first) this.freeIndex = first;
          this.update(first, i, -addend);
          return false;
        }
        lastIndex = index;
      }
      const value = (this.refcounts[cluster] ?? 0) + addend;
      this.refcounts[cluster] = value;
      if (value === 0 && cluster < this.freeIndex) this.freeIndex = cluster;
    }
    return true;
  }

  /** qcow2_alloc_clusters: `bytes` worth of clusters, referenced once; the first cluster's index. */
  alloc(bytes: number): number {
    const count = Math.ceil(bytes / this.clusterSize);
    for (;;) {
      const first = this.findFree(count);
      if (this.update(first, count, 1)) return first;
    }
  }

  /** The refcount blocks in use: [table index, block cluster]. */
  blocks(): [number, number][] {
    return this.table.flatMap((block, index) => (block === 0 ? [] : [[index, block] as [number, number]]));
  }

  /** Clusters one refcount block covers. */
  get perBlock(): number {
    return 2 ** this.blockBits;
  }
}
