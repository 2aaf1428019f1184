// Counting references from the qcow2 metadata, as qemu's calculate_refcounts does: every L1 and
// L2 table (the active one and each snapshot's), the clusters they point to, and the structures
// named by the header. Each problem found is reported with qemu's wording and counted.
import { readAt, requestOk } from '../bytes.ts';
import { addLine, CheckFailure, type CheckReport } from '../check-types.ts';
import type { Qcow2Header } from './header.ts';
import type { ComputedRefcounts } from './check-refcounts.ts';

const hex = (v: bigint | number) => v.toString(16);

/**
 * L2 entries one check may visit (both walks together). A real image visits each L2 table once per
 * L1 table that names it; a hostile one can name one table millions of times from a small file.
 */
export const MAX_L2_ENTRIES_WALKED = 2 ** 29;

/** Counts the L2 entries walked and stops a check that passes the bound, with a clear reason. */
export class WalkBudget {
  private left = MAX_L2_ENTRIES_WALKED;

  spend(entries: number): void {
    this.left -= entries;
    if (this.left < 0) throw new CheckFailure(`instar stops after ${MAX_L2_ENTRIES_WALKED} L2 entries (the L1 tables name too many L2 tables)`);
  }
}
const COPIED_HI = 0x80000000;
const COMPRESSED_HI = 0x40000000;

/** An L2 entry's type, as qcow2_get_cluster_type decides it. */
export type ClusterType = 'compressed' | 'zero-plain' | 'zero-alloc' | 'normal' | 'unallocated';

/** One L2 entry read as two 32-bit halves (cheap) plus, for extended L2, its subcluster bitmap. */
export interface L2Entry {
  hi: number;
  lo: number;
  /** L2E_OFFSET_MASK part; exact as a double (a multiple of 512 below 2^56). */
  offset: number;
}

export function readL2Entry(table: Buffer, i: number, entryBytes: number): L2Entry {
  const hi = table.readUInt32BE(i * entryBytes);
  const lo = table.readUInt32BE(i * entryBytes + 4);
  return { hi, lo, offset: (hi & 0x00ffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0) };
}

export const entryBigInt = (e: { hi: number; lo: number }): bigint => (BigInt(e.hi >>> 0) << 32n) | BigInt(e.lo >>> 0);

export function clusterType(e: L2Entry, extendedL2: boolean, hasDataFile: boolean): ClusterType {
  if (e.hi & COMPRESSED_HI) return 'compressed';
  if (e.lo & 1 && !extendedL2) return e.offset !== 0 ? 'zero-alloc' : 'zero-plain';
  // Offset 0 is a real place in an external data file when the entry is marked COPIED.
  if (e.offset === 0) return hasDataFile && e.hi & COPIED_HI ? 'normal' : 'unallocated';
  return 'normal';
}

/** Walks the tables and counts references into `refs`, reporting into `report`. */
export class ReferenceCounter {
  readonly cs: number;
  private entryBytes: number;

  constructor(
    private dev: { size: number; read(buf: Uint8Array, pos: number): number },
    private h: Qcow2Header,
    private refs: ComputedRefcounts,
    private report: CheckReport,
    private hasDataFile: boolean,
    private budget: WalkBudget,
  ) {
    this.cs = h.clusterSize;
    this.entryBytes = h.extendedL2 ? 16 : 8;
  }

  /**
   * check -r all: qemu turns a preallocated zero cluster whose offset is not aligned into a plain
   * zero cluster (its L2 entry rewritten at once); the rewritten entries collect here.
   */
  preallocFixes?: { pos: number; bytes: Buffer }[];

  private error(line: () => string): void {
    addLine(this.report, line);
    this.report.corruptions++;
  }

  /** inc() for a number offset (exact below 2^53): the hot path of the L2 walk, without BigInt. */
  incNumber(offset: number, size: number): void {
    if (offset + size >= 2 ** 52) return this.inc(BigInt(offset), BigInt(size));
    const fileLen = Math.ceil(this.dev.size / 512) * 512;
    if (offset + size - fileLen >= this.cs) return this.inc(BigInt(offset), BigInt(size));
    const last = Math.floor((offset + size - 1) / this.cs);
    for (let k = Math.floor(offset / this.cs); k <= last; k++) {
      if (!this.refs.inc(k)) this.overflow(k);
    }
  }

  private overflow(k: number): void {
    this.error(() => `ERROR: overflow cluster offset=0x${hex(BigInt(k) * BigInt(this.cs))}`);
    addLine(this.report, () => 'Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing');
  }

  /** qcow2_inc_refcounts_imrt: one more reference to each cluster of [offset, offset + size). */
  inc(offset: bigint, size: bigint): void {
    if (size <= 0n) return;
    // bdrv_getlength: the file's length rounded up to whole sectors.
    const fileLen = (BigInt(this.dev.size) + 511n) / 512n * 512n;
    const cs = BigInt(this.cs);
    // qemu computes this in int64: a region near 2^63 wraps, as it does there.
    if (BigInt.asIntN(64, offset + size - fileLen) >= cs) {
      this.error(() => `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${hex(offset)} size 0x${hex(size)}`);
      return;
    }
    const first = BigInt.asIntN(64, offset) / cs;
    const last = BigInt.asIntN(64, offset + size - 1n) / cs;
    if (first < 0n) {
      // Only a wrapped, hostile offset gets here; qemu's behaviour is undefined. Count it as corrupt.
      this.error(() => `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${hex(offset)} size 0x${hex(size)}`);
      return;
    }
    for (let k = Number(first); k <= Number(last); k++) {
      if (!this.refs.inc(k)) this.overflow(k);
    }
  }

  /** check_refcounts_l1: the L1 table itself, then each L2 table it names. */
  l1(l1Offset: bigint, l1Size: number, fragInfo: boolean): void {
    if (l1Size === 0) return;
    this.inc(l1Offset, BigInt(l1Size) * 8n);
    if (!requestOk(l1Offset, BigInt(l1Size) * 8n)) {
      addLine(this.report, 'ERROR: I/O error in check_refcounts_l1');
      this.report['check-errors']++;
      throw new CheckFailure('Input/output error');
    }
    const table = readAt(this.dev, l1Offset, l1Size * 8); // l1Size is at most 4 Mi entries (checked by the callers)
    for (let i = 0; i < l1Size; i++) {
      const hi = table.readUInt32BE(i * 8);
      const lo = table.readUInt32BE(i * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      if (hi & 0x7f000000 || lo & 0x1ff) this.error(() => `ERROR found L1 entry with reserved bits set: ${hex(entryBigInt({ hi, lo }))}`);
      const l2Offset = (hi & 0x00ffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
      this.incNumber(l2Offset, this.cs);
      if (l2Offset % this.cs !== 0) this.error(() => `ERROR l2_offset=${hex(l2Offset)}: Table is not cluster aligned; L1 entry corrupted`);
      this.l2(l2Offset, fragInfo);
    }
  }

  /** check_refcounts_l2: every entry of one L2 table. */
  private l2(l2Offset: number, fragInfo: boolean): void {
    if (!requestOk(BigInt(l2Offset), BigInt(this.cs))) {
      addLine(this.report, 'ERROR: I/O error in check_refcounts_l2');
      this.report['check-errors']++;
      throw new CheckFailure('Input/output error');
    }
    const table = readAt(this.dev, l2Offset, this.cs);
    const entries = this.cs / this.entryBytes;
    this.budget.spend(entries);
    const r = this.report;
    let nextContiguous = 0;
    for (let i = 0; i < entries; i++) {
      const e = readL2Entry(table, i, this.entryBytes);
      if (e.hi === 0 && e.lo === 0 && !this.h.extendedL2) continue;
      const bitmapHi = this.h.extendedL2 ? table.readUInt32BE(i * 16 + 8) : 0;
      const bitmapLo = this.h.extendedL2 ? table.readUInt32BE(i * 16 + 12) : 0;
      const type = clusterType(e, this.h.extendedL2, this.hasDataFile);
      if (type !== 'compressed' && (e.hi & 0x3f000000 || e.lo & 0x1fe)) {
        this.error(() => `ERROR found l2 entry with reserved bits set: ${hex(entryBigInt(e))}`);
      }
      if (type === 'compressed') {
        let entry = entryBigInt(e);
        const csizeShift = BigInt(62 - (this.h.clusterBits - 8));
        const coffset = entry & ((1n << csizeShift) - 1n);
        if (e.hi & COPIED_HI) {
          this.error(() => `ERROR: coffset=0x${hex(coffset)}: copied flag must never be set for compressed clusters`);
          entry &= ~(1n << 63n);
        }
        if (this.hasDataFile) {
          this.error(() => `ERROR compressed cluster ${i} with data file, entry=0x${hex(entry)}`);
          continue;
        }
        if (bitmapHi !== 0 || bitmapLo !== 0) {
          this.error(() => `ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=0x${hex(entry)}`);
          continue;
        }
        const sectors = ((entry >> csizeShift) & ((1n << BigInt(this.h.clusterBits - 8)) - 1n)) + 1n;
        this.inc(coffset, sectors * 512n - (coffset % 512n));
        if (fragInfo) {
          r['allocated-clusters']++;
          r['compressed-clusters']++;
          // qemu counts every compressed cluster as fragmented.
          r['fragmented-clusters']++;
        }
      } else if (type === 'normal' || type === 'zero-alloc') {
        const offset = e.offset;
        if (((bitmapHi & bitmapLo) >>> 0) !== 0) {
          this.error(() => `ERROR offset=${hex(offset)}: Allocated cluster has corrupted subcluster allocation bitmap`);
        }
        if (offset % this.cs !== 0) {
          const containsData = this.h.extendedL2 ? bitmapLo !== 0 : !(e.lo & 1);
          if (!containsData && this.preallocFixes) {
            addLine(r, () => `Repairing offset=${hex(offset)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
            r['corruptions-fixed']++;
            // QCOW_OFLAG_ZERO alone; with extended L2 entries, 0 and the bitmap as it was.
            const bytes = Buffer.from(table.subarray(i * this.entryBytes, (i + 1) * this.entryBytes));
            bytes.writeBigUInt64BE(this.h.extendedL2 ? 0n : 1n, 0);
            this.preallocFixes.push({ pos: l2Offset + i * this.entryBytes, bytes });
            continue;
          }
          this.error(() => `ERROR offset=${hex(offset)}: ${containsData ? 'Data' : 'Preallocated'} cluster is not properly aligned; L2 entry corrupted.`);
        }
        if (fragInfo) {
          r['allocated-clusters']++;
          if (nextContiguous !== 0 && offset !== nextContiguous) r['fragmented-clusters']++;
          nextContiguous = offset + this.cs;
        }
        if (!this.hasDataFile) this.incNumber(offset, this.cs);
      } else if (type === 'unallocated' && bitmapLo !== 0) {
        this.error(() => 'ERROR: Unallocated cluster has non-zero subcluster allocation map');
      }
    }
  }
}
