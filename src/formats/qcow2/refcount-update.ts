// qcow2 refcounts held in memory while a mutating op plans its writes: qemu's qcow2_get_refcount
// and update_refcount (block/qcow2-refcount.c), over refcount blocks read once and changed in
// place, so that a planner can replay qemu's sequence of increments, decrements and allocations
// and end with exactly the refcount blocks qemu would have written. Nothing is written here: the
// planner turns `changedBlocks()` into steps for formats/repair.ts.
//
// A cluster whose refcount block does not exist yet gets one as qemu's alloc_refcount_block makes
// it (self-describing when it falls in its own range, hooked into the refcount table, and the
// allocation that needed it restarted). A refcount table too small for it grows as qemu's
// qcow2_refcount_area grows it (refcount-grow.ts): new self-describing refcount blocks and a new
// table after everything the old one covers, the header switched to it, the old table freed.
// Refusals throw PlanRefusal before anything is written: callers catch it and print its message.
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt, requestOk } from '../bytes.ts';
import type { Qcow2Header } from './header.ts';
import type { RepairStep } from '../repair.ts';
import { readRefcount, writeRefcount as writeEntry } from './refcount-entry.ts';
import { areaSize, growthStart, type RetiredTable } from './refcount-grow.ts';

/** instar will not do what qemu would here; nothing was written. */
export class PlanRefusal extends ImageError {}

/** A refcount would overflow or drop below 0: qemu's update_refcount fails with EINVAL. */
export class RefcountRangeError extends PlanRefusal {}

/** qemu's -EAGAIN: a refcount block was allocated, the caller must search for free clusters again. */
export class AllocationRestart extends Error {}

/** Most refcount table growths one plan replays (each at least doubles the table). */
const MAX_GROWTHS = 16;

/** The header's refcount_table_offset (then refcount_table_clusters). */
const REFCOUNT_TABLE_FIELDS = 48;


export interface UpdateOptions {
  /** The refcount block may be missing and allocated (only allocations ask: qemu_alloc_clusters). */
  mayAllocate?: boolean;
  /** A refcount reaching 0 is discarded (qemu's pass-discard-snapshot); reverts are not. */
  discard?: boolean;
}

/** Most bytes of refcount blocks one plan holds (a snapshot of a small image touches one or two). */
const MAX_BLOCK_BYTES = 256 * 1024 * 1024;

export interface ModelOptions {
  /** Most bytes of refcount blocks held (MAX_BLOCK_BYTES unless given). */
  maxBlockBytes?: number;
}

export interface RefcountBlock {
  offset: number;
  original: Buffer;
  current: Buffer;
}

export class RefcountModel {
  readonly bits: number;
  readonly perBlock: number;
  readonly max: number;
  readonly clusterSize: number;
  private table: Buffer;
  private tableOffset: number;
  /** Refcount tables this plan replaced, in order (qemu wrote each as it was then, and freed it). */
  private readonly retired: RetiredTable[] = [];
  private readonly blocks = new Map<number, RefcountBlock>();
  /** Refcount table entries this plan sets (new refcount blocks): file position, block offset. */
  private readonly tableEntries = new Map<number, { index: number; offset: number }>();
  /** qemu's free_cluster_index: where the next allocation starts looking (0 at open). */
  freeClusterIndex = 0;
  /** Clusters whose refcount reached 0, in order: qemu discards them (pass-discard-snapshot). */
  readonly freed: number[] = [];
  /** What flush() last wrote of each block (its original bytes until then). */
  private readonly written = new Map<number, Buffer>();
  /** Whether tableWrites() handed out the header switch to a grown table. */
  private switched = false;
  /** Indexes of the blocks changed since the last flush(). */
  private readonly dirty = new Set<number>();
  private readonly maxBlockBytes: number;

  constructor(private dev: BlockDevice, h: Qcow2Header, opts: ModelOptions = {}) {
    this.maxBlockBytes = opts.maxBlockBytes ?? MAX_BLOCK_BYTES;
    this.clusterSize = h.clusterSize;
    this.bits = 2 ** h.refcountOrder;
    this.perBlock = (h.clusterSize * 8) / this.bits;
    // Refcounts above 2^52 are refused: a safe integer holds every count a sane image has.
    this.max = this.bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** this.bits - 1;
    // refcount_table_clusters was bounded at open (8 MiB at most).
    if (!requestOk(h.refcountTableOffset, BigInt(h.refcountTableClusters * h.clusterSize))) throw new ImageError('Could not read the refcount table');
    this.table = readAt(dev, h.refcountTableOffset, h.refcountTableClusters * h.clusterSize);
    this.tableOffset = Number(h.refcountTableOffset);
  }

  private block(cluster: number, create: boolean): RefcountBlock | undefined {
    const index = Math.floor(cluster / this.perBlock);
    const cached = this.blocks.get(index);
    if (cached) return cached;
    const entry = index < this.table.length / 8 ? this.table.readBigUInt64BE(index * 8) & 0xfffffffffffffe00n : 0n;
    if (entry === 0n) {
      if (create) throw new PlanRefusal('instar refuses this qcow2 image: a cluster in use has no refcount block; nothing was written');
      return undefined;
    }
    if (entry % BigInt(this.clusterSize) !== 0n || !requestOk(entry, BigInt(this.clusterSize)) || entry + BigInt(this.clusterSize) > BigInt(this.dev.size)) {
      throw new PlanRefusal(`instar refuses this qcow2 image: the refcount block at 0x${entry.toString(16)} is invalid; nothing was written`);
    }
    if ((this.blocks.size + 1) * this.clusterSize > this.maxBlockBytes) throw new PlanRefusal('the operation touches too many refcount blocks; nothing was written');
    const offset = Number(entry);
    const original = readAt(this.dev, offset, this.clusterSize);
    const b: RefcountBlock = { offset, original, current: Buffer.from(original) };
    this.blocks.set(index, b);
    return b;
  }

  /** qcow2_get_refcount: 0 for clusters past the table or in absent blocks. */
  get(cluster: number): number {
    const b = this.block(cluster, false);
    return b ? readEntry(b.current, cluster % this.perBlock, this.bits) : 0;
  }

  /** A cluster's refcount as the file holds it now (before this plan). */
  original(cluster: number): number {
    const b = this.block(cluster, false);
    return b ? readEntry(b.original, cluster % this.perBlock, this.bits) : 0;
  }

  /**
   * alloc_clusters_noref: the first run of `count` clusters with refcount 0 from the hint on (the
   * hint moves past every cluster looked at); returns the first cluster's index.
   */
  findFree(count: number): number {
    let run = 0;
    while (run < count) {
      const cluster = this.freeClusterIndex++;
      if ((cluster + 1) * this.clusterSize > Number.MAX_SAFE_INTEGER) throw new PlanRefusal('no free cluster below 2^53 bytes; nothing was written');
      run = this.get(cluster) === 0 ? run + 1 : 0;
    }
    return this.freeClusterIndex - count;
  }

  /**
   * update_refcount for the clusters of [offset, offset + length): every refcount changes by
   * `addend` (down when `decrease`); one that reaches 0 lowers the allocation hint and is freed.
   * Throws AllocationRestart (qemu's -EAGAIN) after allocating a missing refcount block, with
   * the clusters already counted put back.
   */
  update(offset: number, length: number, addend: number, decrease: boolean, opts: UpdateOptions = { discard: true }): void {
    if (length <= 0) return;
    const first = Math.floor(offset / this.clusterSize);
    const last = Math.floor((offset + length - 1) / this.clusterSize);
    for (let cluster = first; cluster <= last; cluster++) {
      let b = this.block(cluster, false);
      if (!b) {
        if (!opts.mayAllocate || decrease) throw new PlanRefusal('instar refuses this qcow2 image: a cluster in use has no refcount block; nothing was written');
        try {
          this.allocBlock(cluster);
        } catch (e) {
          // A block for the new block's own refcount restarted first: this one is not hooked up.
          if (!(e instanceof AllocationRestart)) throw e;
        }
        // The caller searches again from these same clusters first (they may still be free);
        // qemu puts back what this call counted.
        if (this.freeClusterIndex > first) this.freeClusterIndex = first;
        this.update(offset, (cluster - first) * this.clusterSize, addend, !decrease, { discard: false });
        throw new AllocationRestart();
      }
      b = b as RefcountBlock;
      const i = cluster % this.perBlock;
      const old = readEntry(b.current, i, this.bits);
      const value = decrease ? old - addend : old + addend;
      if (value < 0 || value > this.max) {
        throw new RefcountRangeError(`the refcount of cluster ${cluster} would leave its range (qemu fails with EINVAL); nothing was written`);
      }
      writeEntry(b.current, i, this.bits, value);
      this.dirty.add(Math.floor(cluster / this.perBlock));
      if (value === 0) {
        if (cluster < this.freeClusterIndex) this.freeClusterIndex = cluster;
        if (opts.discard !== false) this.freed.push(cluster);
      }
    }
  }

  /**
   * alloc_refcount_block for `cluster` when its table entry is free: the new block goes to the
   * first free cluster; it counts itself when it falls in its own range, else its refcount is
   * set in the block that covers it (which may need allocating in turn).
   */
  private allocBlock(cluster: number): void {
    const index = Math.floor(cluster / this.perBlock);
    if (this.held() + this.clusterSize > this.maxBlockBytes) throw new PlanRefusal('the operation needs too many new refcount blocks; nothing was written');
    const newCluster = this.findFree(1);
    if (newCluster === 0) throw new PlanRefusal('instar refuses this qcow2 image: a new refcount block would be at offset 0; nothing was written');
    const cs = this.clusterSize;
    const block: RefcountBlock = { offset: newCluster * cs, original: Buffer.alloc(cs), current: Buffer.alloc(cs) };
    if (Math.floor(newCluster / this.perBlock) === index) {
      writeEntry(block.current, newCluster % this.perBlock, this.bits, 1);
    } else {
      this.update(newCluster * cs, cs, 1, false, { mayAllocate: true, discard: false });
    }
    this.blocks.set(index, block);
    this.dirty.add(index);
    if (index >= this.table.length / 8) {
      this.growTable(cluster, index, newCluster);
      return;
    }
    this.table.writeBigUInt64BE(BigInt(newCluster * cs), index * 8);
    this.tableEntries.set(this.tableOffset + index * 8, { index, offset: newCluster * cs });
  }

  /**
   * alloc_refcount_block's growth: qcow2_refcount_area placed after every range the blocks in use
   * (and `newCluster`, the block for `index`) cover, sized generously.
   */
  private growTable(cluster: number, index: number, newCluster: number): void {
    this.refcountArea(growthStart(this.perBlock, cluster, newCluster), 0, false, { index, cluster: newCluster });
  }

  /**
   * qcow2_refcount_area: from cluster `start` on, the refcount blocks the table lacks (existing
   * ones in range are reused) then a new table, covering themselves and `additional` clusters
   * after them, every cluster of the area counted once; the header is switched to the new table
   * (tableWrites) and the old one freed (not discarded: pass-discard-other is off). Returns the
   * first cluster after the area.
   */
  refcountArea(start: number, additional: number, exact: boolean, hook?: { index: number; cluster: number }): number {
    if (this.retired.length >= MAX_GROWTHS) throw new PlanRefusal('the operation would grow the qcow2 refcount table too often; nothing was written');
    const cs = this.clusterSize;
    const { blocks: total, tableEntries } = areaSize(cs, this.perBlock, start + additional, exact);
    const table = Buffer.alloc(tableEntries * 8);
    this.table.copy(table, 0, 0, Math.min(this.table.length, table.length));
    if (hook) table.writeBigUInt64BE(BigInt(hook.cluster * cs), hook.index * 8);
    const areaIndex = Math.floor(start / this.perBlock);
    let newBlocks = 0;
    for (let i = areaIndex; i < total; i++) if (table.readBigUInt64BE(i * 8) === 0n) newBlocks++;
    const tableCluster = start + newBlocks;
    const end = tableCluster + tableEntries / (cs / 8);
    let next = start;
    for (let i = areaIndex; i < total; i++) {
      let b = this.blocks.get(i) ?? (i < this.table.length / 8 ? this.block(i * this.perBlock, false) : undefined);
      if (table.readBigUInt64BE(i * 8) === 0n || !b) {
        if (this.held() + cs > this.maxBlockBytes) throw new PlanRefusal('the operation touches too many refcount blocks; nothing was written');
        b = { offset: next * cs, original: Buffer.alloc(cs), current: Buffer.alloc(cs) };
        table.writeBigUInt64BE(BigInt(next * cs), i * 8);
        this.blocks.set(i, b);
        next++;
      }
      // Every cluster of the area this block covers (blocks and table) is in use, once.
      const first = Math.max(i * this.perBlock, start);
      const last = Math.min(end, (i + 1) * this.perBlock);
      for (let c = first; c < last; c++) {
        if (readEntry(b.current, c % this.perBlock, this.bits) !== 0) throw new PlanRefusal('instar refuses this qcow2 image: clusters past its last one in use have refcounts; nothing was written');
        writeEntry(b.current, c % this.perBlock, this.bits, 1);
      }
      if (first < last) this.dirty.add(i);
    }
    const old = { offset: this.tableOffset, bytes: Buffer.from(this.table) };
    this.retired.push(old);
    this.table = table;
    this.tableOffset = tableCluster * cs;
    this.update(old.offset, old.bytes.length, 1, true, { discard: false });
    return end;
  }

  /** qcow2_alloc_clusters_at for clusters the refcount blocks cover (after refcountArea). */
  allocAt(first: number, count: number): void {
    for (let c = first; c < first + count; c++) {
      if (this.get(c) !== 0) throw new PlanRefusal('instar could not place the preallocated clusters; nothing was written');
    }
    this.update(first * this.clusterSize, count * this.clusterSize, 1, false, { discard: false });
  }

  /** qcow2_get_last_cluster: the highest cluster below `below` with a refcount, -1 when none. */
  lastUsed(below: number): number {
    for (let c = below - 1; c >= 0; c--) {
      if (this.get(c) !== 0) return c;
      // A file with millions of unused clusters at its end is not what qemu-img writes.
      if (below - c > 1 << 24) throw new PlanRefusal('instar refuses this qcow2 image: too many unused clusters at the end of the file; nothing was written');
    }
    return -1;
  }

  private held(): number {
    return this.blocks.size * this.clusterSize;
  }

  /** Where the file must reach for the refcount structures this plan wrote (0 when nowhere new). */
  get end(): number {
    let end = 0;
    for (const b of this.changedBlocks()) end = Math.max(end, b.offset + this.clusterSize);
    if (this.retired.length > 0) end = Math.max(end, this.tableOffset + this.table.length);
    for (const t of this.retired.slice(1)) end = Math.max(end, t.offset + t.bytes.length);
    return end;
  }

  /** The refcount table the header names once this plan's switch is written (offset, clusters). */
  get tableLocation(): { offset: number; clusters: number } {
    return { offset: this.tableOffset, clusters: this.table.length / this.clusterSize };
  }

  /** Whether a grown refcount table still waits for its header switch (tableWrites). */
  get switchPending(): boolean {
    return this.retired.length > 0 && !this.switched;
  }

  /** Clusters of the refcount table this plan replaced: writes into them wait for the switch. */
  retiredClusters(): Set<number> {
    const out = new Set<number>();
    for (const t of this.retired) {
      const first = t.offset / this.clusterSize;
      for (let c = first; c < first + t.bytes.length / this.clusterSize; c++) out.add(c);
    }
    return out;
  }

  /** Entries in the refcount table as the file holds it (plus the ones this plan set). */
  get tableSize(): number {
    return this.table.length / 8;
  }

  /** The offset of refcount table entry `index` (0 when it names no block), as this plan leaves it. */
  tableEntry(index: number): number {
    return Number(this.table.readBigUInt64BE(index * 8) & 0xfffffffffffffe00n);
  }

  /** Whether a refcount block covers `cluster` (else counting it would need a new one). */
  covered(cluster: number): boolean {
    return this.block(cluster, false) !== undefined;
  }

  /**
   * update_refcount of one cluster by one, where its refcount block exists: false, with nothing
   * changed, when no block covers it or the refcount would leave 0..refcount_max.
   */
  tryAdd(cluster: number, delta: 1 | -1): boolean {
    if (!this.covered(cluster)) return false;
    try {
      this.update(cluster * this.clusterSize, this.clusterSize, 1, delta < 0, { discard: false });
      return true;
    } catch (e) {
      if (e instanceof RefcountRangeError) return false;
      throw e;
    }
  }

  /**
   * Whether refcount block `index` counts nothing but (when it sits in its own range) itself, as
   * qemu's qcow2_shrink_reftable asks after a shrink: such a block would be dropped.
   */
  unusedBlock(index: number): boolean {
    const b = this.block(index * this.perBlock, false);
    if (!b) return false;
    const bytes = Buffer.from(b.current);
    const own = b.offset / this.clusterSize;
    if (Math.floor(own / this.perBlock) === index) writeEntry(bytes, own % this.perBlock, this.bits, 0);
    return bytes.every((v) => v === 0);
  }

  /**
   * Writes of the blocks changed since the last flush, in table order (qemu's cache flush). While
   * a grown refcount table waits for its header switch (tableWrites() not taken yet), the old
   * table still counts: only raised refcounts are written, lowered ones (the old table's own
   * among them) stay pending for the flush after the switch.
   */
  flush(): RepairStep[] {
    const steps: RepairStep[] = [];
    const pending = this.retired.length > 0 && !this.switched;
    const late = pending ? this.retiredClusters() : new Set<number>();
    for (const i of [...this.dirty].sort((a, b) => a - b)) {
      const b = this.blocks.get(i)!;
      // A block in a replaced table's clusters waits for the switch (tableWrites writes it).
      if (late.has(b.offset / this.clusterSize)) continue;
      const disk = this.written.get(i) ?? b.original;
      const bytes = pending ? this.raised(disk, b.current) : Buffer.from(b.current);
      if (bytes.equals(b.current)) this.dirty.delete(i);
      this.written.set(i, bytes);
      steps.push({ kind: 'write', pos: b.offset, bytes });
    }
    return steps;
  }

  /** A refcount block with every entry at the larger of its two values. */
  private raised(from: Buffer, to: Buffer): Buffer {
    const out = Buffer.from(from);
    for (let i = 0; i < this.perBlock; i++) {
      const v = readEntry(to, i, this.bits);
      if (v > readEntry(from, i, this.bits)) writeEntry(out, i, this.bits, v);
    }
    return out;
  }

  /**
   * The refcount table entries to write for new blocks (after the blocks themselves), in table
   * order, or in the order qemu hooks them up ('hooked'): a new block whose own refcount another
   * new block holds comes after that one, so that no prefix hooks up a block counted nowhere.
   * After a growth: the entries qemu set in the old table before it, then the new table whole,
   * then the header's refcount_table_offset and refcount_table_clusters switched to it.
   */
  tableWrites(order: 'table' | 'hooked' = 'table'): { pos: number; bytes: Buffer }[] {
    const entries = [...this.tableEntries.entries()];
    if (order === 'table') entries.sort((a, b) => a[0] - b[0]);
    const entryWrite = (pos: number, offset: number) => {
      const bytes = Buffer.alloc(8);
      bytes.writeBigUInt64BE(BigInt(offset));
      return { pos, bytes };
    };
    if (this.retired.length === 0) return entries.map(([pos, e]) => entryWrite(pos, e.offset));
    // qemu's sequence, replayed so that the file ends as qemu's and no prefix hooks up a block
    // that is not written: the entries it set in each table it replaced, the tables between
    // (never in use again, their bytes as qemu left them), the final table, the switch to it.
    const writes: { pos: number; bytes: Buffer }[] = [];
    this.retired.forEach((t, n) => {
      if (n > 0) writes.push({ pos: t.offset, bytes: t.bytes });
      for (const [pos, e] of entries) if (pos >= t.offset && pos < t.offset + t.bytes.length) writes.push(entryWrite(pos, e.offset));
    });
    // Blocks in a replaced table's clusters are written after the switch, then hooked up, as
    // qemu does when it allocates them after the old table was freed.
    const late = this.retiredClusters();
    const table = Buffer.from(this.table);
    const lateBlocks: [number, RefcountBlock][] = [];
    for (const [i, b] of this.blocks) {
      if (!late.has(b.offset / this.clusterSize)) continue;
      table.writeBigUInt64BE(0n, i * 8);
      lateBlocks.push([i, b]);
    }
    const header = Buffer.alloc(12);
    header.writeBigUInt64BE(BigInt(this.tableOffset));
    header.writeUInt32BE(this.table.length / this.clusterSize, 8);
    writes.push({ pos: this.tableOffset, bytes: table }, { pos: REFCOUNT_TABLE_FIELDS, bytes: header });
    for (const [i, b] of lateBlocks) {
      writes.push({ pos: b.offset, bytes: Buffer.from(b.current) });
      this.written.set(i, Buffer.from(b.current));
    }
    for (const [i, b] of lateBlocks) writes.push(entryWrite(this.tableOffset + i * 8, b.offset));
    this.switched = true;
    return writes;
  }

  /** Refcount blocks that differ from the file, in table order. */
  changedBlocks(): RefcountBlock[] {
    return [...this.blocks.entries()].sort((a, b) => a[0] - b[0]).map(([, b]) => b).filter((b) => !b.current.equals(b.original));
  }

  /** Entry `i` of a block's original or current bytes (planners order writes by it). */
  entry(block: Buffer, i: number): number {
    return readEntry(block, i, this.bits);
  }

  setEntry(block: Buffer, i: number, value: number): void {
    writeEntry(block, i, this.bits, value);
  }
}

/** A refcount entry as a number; a refcount above 2^53 (64-bit entries only) is refused. */
function readEntry(b: Buffer, i: number, bits: number): number {
  const v = readRefcount(b, i, bits);
  if (typeof v === 'bigint') throw new PlanRefusal('a refcount is too large; nothing was written');
  return v;
}
