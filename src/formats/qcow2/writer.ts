// The qcow2 writer: guest data into an image qcow2 create has just laid out, placed where qemu's
// qcow2 driver places it when qemu-img convert writes in ascending order. Per write, split at L2
// table boundaries as qcow2_co_pwritev does: the L2 table first (l2_allocate takes one cluster
// from the allocator), then one contiguous run for the request's unallocated clusters
// (handle_alloc). The allocator is create's own (create-allocator.ts) in the state create left
// it, so refcount blocks land where qemu's land. L2 tables, the L1 entries and the refcount
// blocks stay in memory (qemu's caches) and are written by finish(); data goes out at once.
import { ImageError, type BlockDevice, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { geometry, refcountBlock, type Geometry, type Qcow2Plan } from './create.ts';
import { compressCluster } from './writer-compress.ts';
import { storeNewBitmaps, type NewBitmap } from './writer-bitmaps.ts';

const COPIED = 2n ** 63n;
const COMPRESSED = 2n ** 62n;

export class Qcow2Writer implements ImageWriter {
  /** The write unit: a cluster, or with extended L2 entries a subcluster (qemu allocates those one by one). */
  readonly clusterSize: number;
  private readonly cs: number;
  private readonly g: Geometry;
  private readonly entrySize: number;
  /** Guest bytes one L2 table maps. */
  private readonly tableSpan: number;
  /** L2 tables this writer allocated, by L1 index: [host cluster, bytes]. */
  private readonly tables = new Map<number, { cluster: number; bytes: Uint8Array; view: DataView }>();
  /** Host cluster of each guest cluster this writer allocated (qemu's L2 entries, unserialized). */
  private readonly hostOf = new Map<number, number>();
  /** Extended L2: the allocated subclusters of each guest cluster (the entry's low 32 bitmap bits). */
  private readonly subclusters = new Map<number, number>();
  /** Where the file must reach at the end: qemu zero-fills every (sub)cluster it writes into. */
  private fileEnd: number;
  private dataEnd = 0;
  private retiredWritten = 0;
  /** Where create left the refcount table: [cluster, clusters]. */
  private readonly tableAt: [number, number];
  /** -c: the next free byte in the host cluster compressed clusters are packed into (qemu's free_byte_offset; 0: none). */
  private freeByte = 0;
  /** -c: where each compressed guest cluster went, [host byte offset, length]. */
  private readonly compressedAt = new Map<number, [number, number]>();
  readonly compressedClusterSize: number;
  /** -B: guest clusters made to read as zeros (v3 zero flag); with extended L2, their zero subclusters' bits. */
  private readonly zeroed = new Map<number, number>();

  constructor(private readonly files: WriterFiles, private readonly p: Qcow2Plan) {
    this.g = geometry(p);
    this.cs = this.g.cs;
    this.clusterSize = p.extendedL2 ? this.cs / 32 : this.cs;
    this.compressedClusterSize = this.cs;
    this.entrySize = p.extendedL2 ? 16 : 8;
    this.tableSpan = this.g.cs * this.g.l2Entries;
    this.fileEnd = files.image.size;
    this.tableAt = [this.g.allocator.tableCluster, this.g.allocator.tableClusters];
  }

  private get preallocated(): boolean {
    return this.p.metadata || this.p.full;
  }

  /** With an external data file qemu refuses every compressed write, the last empty one too. */
  get compressedEndFails(): boolean {
    return this.p.dataFile !== undefined;
  }

  write(data: Uint8Array, offset: number): void {
    this.eachTable(data.length, offset, (start, length) => this.writeInTable(data.subarray(start, start + length), offset + start));
  }

  /** Calls `part` for the pieces of [offset, offset + length) inside one L2 table each, in order. */
  private eachTable(length: number, offset: number, part: (start: number, length: number) => void): void {
    if (offset < 0 || offset + length > this.p.size) throw new ImageError(`instar's qcow2 writer was asked to write outside the disk (offset ${offset})`);
    for (let done = 0; done < length; ) {
      const guest = offset + done;
      const n = Math.min(length - done, (Math.floor(guest / this.tableSpan) + 1) * this.tableSpan - guest);
      part(done, n);
      done += n;
    }
  }

  private dataDevice(): BlockDevice {
    return this.files.dataFile ?? this.files.image;
  }

  /** The writes of one request inside one L2 table: allocation first, then the bytes, host run by host run. */
  private writeInTable(data: Uint8Array, guest: number): void {
    const cs = this.cs;
    const first = Math.floor(guest / cs);
    const last = Math.floor((guest + data.length - 1) / cs);
    this.allocate(first, last);
    if (this.p.extendedL2) this.markSubclusters(guest, guest + data.length);
    const dev = this.dataDevice();
    // Consecutive guest clusters in consecutive host clusters go out as one write.
    let runStart = guest;
    for (let c = first; c <= last; c++) {
      const runEnd = Math.min((c + 1) * cs, guest + data.length);
      const contiguous = c < last && this.host(c + 1) === this.host(c) + 1;
      if (contiguous) continue;
      const firstCluster = Math.floor(runStart / cs);
      const at = this.host(firstCluster) * cs + (runStart - firstCluster * cs);
      dev.write!(data.subarray(runStart - guest, runEnd - guest), at);
      // qemu fills the rest of each (sub)cluster it writes into with zeros: the file reaches its end.
      const end = Math.ceil((at + runEnd - runStart) / this.clusterSize) * this.clusterSize;
      if (dev === this.files.image) this.fileEnd = Math.max(this.fileEnd, end);
      else this.dataEnd = Math.max(this.dataEnd, end);
      runStart = runEnd;
    }
  }

  /** Sets the allocation bits of the subclusters [start, end) touches. */
  private markSubclusters(start: number, end: number): void {
    const sub = this.clusterSize;
    for (let s = Math.floor(start / sub); s < Math.ceil(end / sub); s++) {
      const cluster = Math.floor(s / 32);
      this.subclusters.set(cluster, ((this.subclusters.get(cluster) ?? 0) | (1 << (s % 32))) >>> 0);
    }
  }

  /** Host cluster of a guest cluster (allocated or preallocated); -1 when none. */
  private host(guestCluster: number): number {
    if (this.p.dataFile !== undefined) return guestCluster;
    const own = this.hostOf.get(guestCluster);
    if (own !== undefined) return own;
    if (!this.preallocated) return -1;
    const run = this.g.dataRuns.find(([start, , count]) => guestCluster >= start && guestCluster < start + count);
    return run ? run[1] + guestCluster - run[0] : -1;
  }

  /** handle_alloc over [first, last] (one L2 table): the table, then one run for the clusters without a host cluster. */
  private allocate(first: number, last: number): void {
    if (this.preallocated) return;
    this.table(Math.floor((first * this.cs) / this.tableSpan));
    if (this.p.dataFile !== undefined) {
      for (let c = first; c <= last; c++) this.hostOf.set(c, c);
      return;
    }
    let c = first;
    while (c <= last) {
      if (this.hostOf.has(c)) {
        c++;
        continue;
      }
      let end = c;
      while (end + 1 <= last && !this.hostOf.has(end + 1)) end++;
      const start = this.alloc((end - c + 1) * this.cs);
      for (let i = c; i <= end; i++) this.hostOf.set(i, start + i - c);
      c = end + 1;
    }
  }

  private alloc(bytes: number): number {
    const cluster = this.g.allocator.alloc(bytes);
    // A refcount table the allocation replaced keeps the entries qemu wrote into it, until its
    // clusters are reused (written after this).
    const retired = this.g.allocator.retired;
    for (; this.retiredWritten < retired.length; this.retiredWritten++) {
      const { cluster: at, clusters, entries } = retired[this.retiredWritten];
      const bytes = new Uint8Array(clusters * this.cs);
      const view = new DataView(bytes.buffer);
      entries.forEach((block, i) => block !== 0 && view.setBigUint64(i * 8, BigInt(block * this.cs)));
      this.files.image.write!(bytes, at * this.cs);
    }
    return cluster;
  }

  /** The L2 table of L1 entry `index`, allocated on first use (l2_allocate). */
  private table(index: number): { cluster: number; bytes: Uint8Array; view: DataView } {
    let t = this.tables.get(index);
    if (!t) {
      const bytes = new Uint8Array(this.cs);
      t = { cluster: this.alloc(this.cs), bytes, view: new DataView(bytes.buffer) };
      this.fileEnd = Math.max(this.fileEnd, (t.cluster + 1) * this.cs);
      this.tables.set(index, t);
    }
    return t;
  }

  /**
   * qcow2_co_pwrite_zeroes over a backing file: version 3 marks the clusters (or subclusters) as
   * zero in their L2 entries (allocating the L2 table as a write would); version 2 has no zero
   * flag, so zeros are written as data.
   */
  writeZeroes(offset: number, length: number): void {
    if (this.p.version < 3 || this.preallocated) {
      const zeros = new Uint8Array(Math.min(length, 1024 * 1024));
      for (let done = 0; done < length; done += zeros.length) this.write(zeros.subarray(0, Math.min(zeros.length, length - done)), offset + done);
      return;
    }
    this.eachTable(length, offset, (start, n) => {
      this.table(Math.floor((offset + start) / this.tableSpan));
      const sub = this.p.extendedL2 ? this.clusterSize : this.cs;
      for (let u = Math.floor((offset + start) / sub); u < Math.ceil((offset + start + n) / sub); u++) {
        const cluster = this.p.extendedL2 ? Math.floor(u / 32) : u;
        const bit = this.p.extendedL2 ? 1 << (u % 32) : 1;
        this.zeroed.set(cluster, ((this.zeroed.get(cluster) ?? 0) | bit) >>> 0);
      }
    });
  }

  /**
   * qcow2_co_pwritev_compressed: one whole cluster (zero-padded at the disk's end), compressed
   * and packed after the previous one, or written as it is when it does not shrink.
   */
  writeCompressed(data: Uint8Array, offset: number): void {
    const cs = this.cs;
    if (offset % cs !== 0 || data.length > cs || (data.length < cs && offset + data.length < this.p.size)) {
      throw new ImageError('instar writes compressed qcow2 clusters one whole cluster at a time');
    }
    // qemu's driver refuses compressed writes into an external data file (ENOTSUP).
    if (this.p.dataFile !== undefined) throw new ImageError(`error while writing at byte ${offset}: Operation not supported`, 'ENOTSUP');
    if (this.preallocated) throw new ImageError('Compression and preallocation not supported at the same time');
    const cluster = offset / cs;
    let whole = data;
    if (data.length < cs) {
      whole = new Uint8Array(cs);
      whole.set(data);
    }
    const compressed = compressCluster(whole, this.p.zstd, cs - 1);
    if (!compressed) {
      this.write(data, offset);
      return;
    }
    this.table(Math.floor(offset / this.tableSpan));
    const at = this.allocBytes(compressed.length);
    this.files.image.write!(compressed, at);
    this.fileEnd = Math.max(this.fileEnd, at + compressed.length);
    this.compressedAt.set(cluster, [at, compressed.length]);
  }

  /**
   * qcow2_alloc_bytes: `size` bytes after the previous compressed cluster, in the same host
   * cluster or running on into the next one when that is the one the allocator hands out; a
   * fresh cluster otherwise. Every host cluster the bytes touch gains one reference.
   */
  private allocBytes(size: number): number {
    const cs = this.cs;
    const refcounts = this.g.allocator.refcounts;
    let offset = this.freeByte;
    // A cluster whose refcount is at its width's maximum takes no more (refcount_bits=1: one each).
    if (offset !== 0 && (refcounts[Math.floor(offset / cs)] ?? 0) >= 2 ** 2 ** this.p.refcountOrder - 1) offset = 0;
    let free = offset === 0 ? 0 : cs - (offset % cs);
    let fresh = -1;
    if (offset === 0 || free < size) {
      fresh = this.alloc(cs);
      if (offset === 0 || Math.ceil(offset / cs) !== fresh) {
        offset = fresh * cs;
        free = cs;
      } else {
        free += cs;
      }
    }
    // alloc() counted the fresh cluster once; the others the bytes touch gain their reference here.
    for (let c = Math.floor(offset / cs); c <= Math.floor((offset + size - 1) / cs); c++) {
      if (c !== fresh) refcounts[c] = (refcounts[c] ?? 0) + 1;
    }
    this.freeByte = (offset + size) % cs === 0 ? 0 : offset + size;
    return offset;
  }

  private endAligned = false;
  private bitmapsStored = false;

  /** After compressed writes qemu-img convert rounds the file up to whole sectors (qcow2's empty compressed write), once. */
  private alignCompressedEnd(): void {
    if (this.endAligned || this.compressedAt.size === 0) return;
    this.endAligned = true;
    this.fileEnd = Math.ceil(Math.max(this.fileEnd, this.files.image.size) / 512) * 512;
  }

  /** convert --bitmaps: qemu stores the new image's bitmaps at close, after the copy and its end alignment. */
  storeBitmaps(list: readonly NewBitmap[]): void {
    this.bitmapsStored = list.length > 0;
    this.alignCompressedEnd();
    for (const bm of list) {
      if (bm.bits.virtualSize !== BigInt(this.p.size)) throw new ImageError(`instar cannot copy bitmap '${bm.name.toString()}': its size differs from the new image's`);
    }
    storeNewBitmaps(this.files.image, list, (bytes) => this.alloc(bytes) * this.cs, this.cs);
  }

  /** The allocation bits of the subclusters written, into the L2 entries create preallocated. */
  private markPreallocated(): void {
    const g = this.g;
    for (const [guest, bits] of this.subclusters) {
      const table = g.l2Clusters[Math.floor(guest / g.l2Entries)];
      const entry = new Uint8Array(4);
      new DataView(entry.buffer).setUint32(0, bits);
      this.files.image.write!(entry, table * this.cs + (guest % g.l2Entries) * this.entrySize + 12);
    }
  }

  finish(): void {
    const data = this.files.dataFile;
    if (data && data.size < this.dataEnd) data.truncate!(this.dataEnd);
    if (this.preallocated) {
      // Create wrote every table; with extended L2 entries qemu's writes then set the allocation
      // bits of the subclusters they touch. Only bitmaps stored since change the refcounts.
      if (this.p.extendedL2) this.markPreallocated();
      if (this.bitmapsStored) this.writeRefcounts();
      return;
    }
    const cs = this.cs;
    const dev = this.files.image;
    const g = this.g;
    for (const [guest, host] of this.hostOf) {
      const t = this.tables.get(Math.floor((guest * cs) / this.tableSpan))!;
      const at = (guest % g.l2Entries) * this.entrySize;
      // An external data file's clusters are not reference-counted, and are not COPIED in raw mode either.
      t.view.setBigUint64(at, BigInt(host * cs) | COPIED);
      if (this.p.extendedL2) t.view.setUint32(at + 12, this.subclusters.get(guest) ?? 0);
    }
    for (const [guest, bits] of this.zeroed) {
      const t = this.tables.get(Math.floor((guest * cs) / this.tableSpan))!;
      const at = (guest % g.l2Entries) * this.entrySize;
      if (this.p.extendedL2) t.view.setUint32(at + 8, bits);
      else if (!this.hostOf.has(guest)) t.view.setBigUint64(at, 1n);
    }
    // Compressed entries: the host offset and the count of 512-byte sectors the bytes touch, minus one.
    const sizeShift = BigInt(62 - (Math.log2(cs) - 8));
    for (const [guest, [at, length]] of this.compressedAt) {
      const t = this.tables.get(Math.floor((guest * cs) / this.tableSpan))!;
      const sectors = Math.floor((at + length - 1) / 512) - Math.floor(at / 512);
      t.view.setBigUint64((guest % g.l2Entries) * this.entrySize, COMPRESSED | (BigInt(sectors) << sizeShift) | BigInt(at));
    }
    const l1 = new Uint8Array(g.l1Size * 8);
    const l1View = new DataView(l1.buffer);
    for (const [index, t] of this.tables) {
      dev.write!(t.bytes, t.cluster * cs);
      l1View.setBigUint64(index * 8, BigInt(t.cluster * cs) | COPIED);
    }
    if (l1.length > 0) dev.write!(l1, g.l1Offset);
    this.writeRefcounts();
    this.alignCompressedEnd();
    if (dev.size < this.fileEnd) dev.truncate!(this.fileEnd);
  }

  /** The refcount table (new blocks may have joined it, or it moved) and every block. */
  private writeRefcounts(): void {
    const { cs, g } = this;
    const dev = this.files.image;
    const table = new Uint8Array(g.allocator.tableClusters * cs);
    const tableView = new DataView(table.buffer);
    g.allocator.table.forEach((block, i) => block !== 0 && tableView.setBigUint64(i * 8, BigInt(block * cs)));
    dev.write!(table, g.allocator.tableCluster * cs);
    // A grown table moved: the header's refcount_table_offset and _clusters follow it.
    if (g.allocator.tableCluster !== this.tableAt[0] || g.allocator.tableClusters !== this.tableAt[1]) {
      const fields = new DataView(new ArrayBuffer(12));
      fields.setBigUint64(0, BigInt(g.allocator.tableCluster * cs));
      fields.setUint32(8, g.allocator.tableClusters);
      dev.write!(new Uint8Array(fields.buffer), 48);
    }
    for (const [index, block] of g.allocator.blocks()) {
      dev.write!(refcountBlock(g, this.p.refcountOrder, index), block * cs);
      this.fileEnd = Math.max(this.fileEnd, (block + 1) * cs);
    }
  }
}

export const qcow2Writer: WriterCapability = {
  open(files: WriterFiles, plan: CreatePlan): ImageWriter {
    return new Qcow2Writer(files, plan as unknown as Qcow2Plan);
  },
};
