// Guest offset → host offset through the L1 and L2 tables, with standard (8-byte) and extended
// (16-byte, 32 subclusters) L2 entries, and compressed clusters.
import { ImageError, type BlockDevice, type Extent } from '../types.ts';
import { readAt } from '../bytes.ts';
import { inflateZlib, inflateZstd } from './decompress.ts';
import { INCOMPAT, type Qcow2Header } from './header.ts';
import { compressedSpan, entryBigInt, hostLowBits, hostOffsetOf, unitTypeOf, type UnitType } from './l2-entry.ts';

const OFFSET_MASK = 0x00fffffffffffe00n;

/**
 * Metadata qemu calls corrupt while reading: the request fails with EIO, and the first such event
 * of an image prints `warning` on stderr (qemu's qcow2_signal_corruption, read-only wording).
 */
export class Qcow2CorruptionError extends ImageError {
  constructor(readonly warning: string | undefined) {
    super('Input/output error', 'EIO');
    this.name = 'Qcow2CorruptionError';
  }
}

/** printf's %#x: "0" for zero, "0x…" otherwise. */
const hexAlt = (v: bigint | number): string => (BigInt(v) === 0n ? '0' : `0x${v.toString(16)}`);

export type UnitKind = 'data' | 'zero' | 'unallocated' | 'compressed';

const KIND: Record<Exclude<UnitType, 'invalid'>, UnitKind> = {
  normal: 'data',
  'zero-plain': 'zero',
  'zero-alloc': 'zero',
  'unallocated-plain': 'unallocated',
  'unallocated-alloc': 'unallocated',
  compressed: 'compressed',
};

/** The mapping of one unit: a cluster, or a subcluster with extended L2 entries. */
export interface UnitMapping {
  kind: UnitKind;
  /** Host offset of the unit's first byte, for units that keep an allocation. */
  hostOffset?: number;
  /** The L2 entry, for 'compressed': its descriptor says where the compressed bytes are. */
  compressed?: EntryHalves;
}

/** A 64-bit L2 entry as its high and low 32-bit halves. */
export interface EntryHalves {
  hi: number;
  lo: number;
}

/** Where one guest cluster's L2 entry is, and what it holds (the entry as two 32-bit halves). */
interface Slot {
  l2Offset: bigint;
  l2Index: number;
  hi: number;
  lo: number;
}

/** The entry's place, as qemu's corruption messages name it. */
const where = (slot: Slot): string => `(L2 offset: ${hexAlt(slot.l2Offset)}, L2 index: ${hexAlt(slot.l2Index)})`;

/** The entry's host offset field, exact (for messages and the data-file rule). */
const exactHost = (slot: Slot): bigint => entryBigInt(slot.hi, slot.lo) & OFFSET_MASK;

/** One unit: its type, which subcluster of its cluster it is, and its L2 entry where it has one. */
interface Unit {
  type: UnitType;
  sub: number;
  slot?: Slot;
}

/** What one L1 entry leads to: no table (a hole), a misaligned table offset (corrupt), or the table. */
type TableRef = { kind: 'none' } | { kind: 'unaligned'; l2Offset: bigint } | { kind: 'table'; l2Offset: bigint; table: Buffer };
const NO_TABLE: TableRef = { kind: 'none' };

/** Looks up units; keeps the L1 table and the most recent L2 tables in memory. */
export class ClusterMap {
  /** Bytes covered by one mapping: the subcluster size with extended L2 entries. */
  readonly unitSize: number;
  private l1?: Buffer;
  private l2Cache = new Map<bigint, Buffer>();
  private entryBytes: number;
  private l2Span: number;
  private dataFile: boolean;
  /** The last L1 entry resolved: runs walk one table for thousands of units. */
  private lastL1Index = -1;
  private lastRef: TableRef = NO_TABLE;
  private lastCompressed?: { hi: number; lo: number; data: Uint8Array };
  /** One buffer for compressed input, reused: a cluster's input is at most two clusters (compressedSpan). */
  private inputScratch?: Buffer;
  private corruptionSignaled = false;

  constructor(private dev: BlockDevice, private h: Qcow2Header) {
    this.entryBytes = h.extendedL2 ? 16 : 8;
    this.unitSize = h.extendedL2 ? h.clusterSize / 32 : h.clusterSize;
    this.l2Span = h.clusterSize * 2 ** h.l2Bits;
    this.dataFile = (h.incompatible & INCOMPAT.dataFile) !== 0n;
  }

  private l1Table(): Buffer {
    // l1Size ≤ 4 Mi entries (checked when opening): at most 32 MiB, read once.
    this.l1 ??= readAt(this.dev, this.h.l1TableOffset, this.h.l1Size * 8);
    return this.l1;
  }

  private l2Table(offset: bigint): Buffer {
    let t = this.l2Cache.get(offset);
    if (!t) {
      if (this.l2Cache.size >= 64) this.l2Cache.delete(this.l2Cache.keys().next().value as bigint);
      t = readAt(this.dev, offset, this.h.clusterSize);
      this.l2Cache.set(offset, t);
    }
    return t;
  }

  /** The L2 table behind L1 entry `l1Index`, as qemu checks it before reading it. */
  private tableRef(l1Index: number): TableRef {
    if (l1Index === this.lastL1Index) return this.lastRef;
    const l2Offset = l1Index >= this.h.l1Size ? 0n : this.l1Table().readBigUInt64BE(l1Index * 8) & OFFSET_MASK;
    let ref: TableRef;
    if (l2Offset === 0n) ref = NO_TABLE;
    else if (l2Offset % BigInt(this.h.clusterSize) !== 0n) ref = { kind: 'unaligned', l2Offset };
    else ref = { kind: 'table', l2Offset, table: this.l2Table(l2Offset) };
    this.lastL1Index = l1Index;
    this.lastRef = ref;
    return ref;
  }

  private corrupt(what: string): Qcow2CorruptionError {
    const first = !this.corruptionSignaled;
    this.corruptionSignaled = true;
    return new Qcow2CorruptionError(first ? `qcow2: Image is corrupt: ${what}; further non-fatal corruption events will be suppressed` : undefined);
  }

  /** The type of unit `sub` of the entry at byte `at` of `table`. */
  private typeAt(table: Buffer, at: number, sub: number): UnitType {
    const ext = this.h.extendedL2;
    return unitTypeOf(table.readUInt32BE(at), table.readUInt32BE(at + 4), ext ? table.readUInt32BE(at + 8) : 0, ext ? table.readUInt32BE(at + 12) : 0, sub, ext, this.dataFile);
  }

  /**
   * The unit holding `guest`: its type and, with an L2 table, the entry it came from; a message
   * when the L1 entry is corrupt (qemu checks that before it reads the table).
   */
  private unit(guest: number): Unit | string {
    const cs = this.h.clusterSize;
    const sub = Math.floor((guest % cs) / this.unitSize);
    const l1Index = Math.floor(guest / this.l2Span);
    const ref = this.tableRef(l1Index);
    if (ref.kind === 'none') return { type: 'unallocated-plain', sub };
    if (ref.kind === 'unaligned') return `L2 table offset ${hexAlt(ref.l2Offset)} unaligned (L1 index: ${hexAlt(l1Index)})`;
    const l2Index = Math.floor(guest / cs) % 2 ** this.h.l2Bits;
    const at = l2Index * this.entryBytes;
    const slot = { l2Offset: ref.l2Offset, l2Index, hi: ref.table.readUInt32BE(at), lo: ref.table.readUInt32BE(at + 4) };
    return { type: this.typeAt(ref.table, at, sub), sub, slot };
  }

  /**
   * A unit's mapping as qemu's qcow2_get_host_offset checks the first entry of a request, or the
   * corruption message it fails with (pure: whether to signal it is the caller's choice).
   */
  private mapping(u: Unit | string, guest: number): UnitMapping | string {
    if (typeof u === 'string') return u;
    const { type, slot, sub } = u;
    if (!slot) return { kind: 'unallocated' };
    if (this.h.version < 3 && (type === 'zero-plain' || type === 'zero-alloc')) return `Zero cluster entry found in pre-v3 image ${where(slot)}`;
    // qemu's format string joins "found " and " (L2 offset", hence two spaces.
    if (type === 'invalid') return `Invalid cluster entry found  ${where(slot)}`;
    if (type === 'compressed') {
      if (this.dataFile) return `Compressed cluster entry found in image with external data file ${where(slot)}`;
      return { kind: 'compressed', compressed: { hi: slot.hi, lo: slot.lo } };
    }
    if (type === 'zero-plain' || type === 'unallocated-plain') return { kind: KIND[type] };
    const cs = this.h.clusterSize;
    // The cluster size divides 2^32: the low half of the offset decides its alignment.
    if (hostLowBits(slot.lo) % cs !== 0) return `Cluster allocation offset ${hexAlt(exactHost(slot))} unaligned ${where(slot)}`;
    // An external data file maps each guest cluster to the same offset in it (qemu's own wording,
    // unbalanced parenthesis included).
    const guestCluster = guest - (guest % cs);
    if (this.dataFile && exactHost(slot) !== BigInt(guestCluster)) {
      return `External data file host cluster offset ${hexAlt(exactHost(slot))} does not match guest cluster offset: ${hexAlt(guestCluster)}, L2 index: ${hexAlt(slot.l2Index)})`;
    }
    return { kind: KIND[type], hostOffset: hostOffsetOf(slot.hi, slot.lo) + sub * this.unitSize };
  }

  /** The mapping of the unit holding guest offset `guest` (< virtual size). */
  lookup(guest: number): UnitMapping {
    const m = this.mapping(this.unit(guest), guest);
    if (typeof m === 'string') throw this.corrupt(m);
    return m;
  }

  /**
   * A run of units of the same type (and contiguous host offsets where they have one), counted
   * as qemu's count_contiguous_subclusters does: entries after the first are not checked for
   * corruption, except that an invalid one it reaches in the same L2 table fails the request.
   * Unlike qemu, a run may go on into later L2 tables (map merges such runs anyway); it stops
   * before an entry there that would fail as a request's first, so that the next request fails.
   * (A unit of the run's type whose host offset continues the run never fails there: the first
   * unit passed the same checks, and contiguity keeps alignment and the data-file rule.)
   */
  extent(offset: number, length: number, virtualSize: number): Extent {
    const us = this.unitSize;
    const cs = this.h.clusterSize;
    const end = Math.min(virtualSize, offset + length);
    const firstUnit = this.unit(offset);
    const first = this.mapping(firstUnit, offset);
    if (typeof first === 'string') throw this.corrupt(first);
    const unitStart = offset - (offset % us);
    if (first.kind === 'compressed') {
      // Compressed clusters are reported one at a time: each has its own host location.
      const clusterEnd = offset - (offset % cs) + cs;
      return { offset, length: Math.min(clusterEnd, end) - offset, kind: 'data', depth: 0, compressed: true };
    }
    const firstType = (firstUnit as Unit).type;
    const firstTable = Math.floor(offset / this.l2Span);
    let pos = unitStart + us;
    while (pos < end) {
      const l1Index = Math.floor(pos / this.l2Span);
      const tableEnd = (l1Index + 1) * this.l2Span;
      const ref = this.tableRef(l1Index);
      // A missing L2 table is one hole: step over its whole span (sparse disks can be petabytes).
      if (ref.kind === 'none' && firstType === 'unallocated-plain') {
        pos = tableEnd;
        continue;
      }
      if (ref.kind !== 'table') break;
      const stop = Math.min(end, tableEnd);
      pos = this.runInTable(ref, pos, stop, firstType, first.hostOffset, unitStart, l1Index === firstTable);
      if (pos < stop) break;
    }
    const ext: Extent = { offset, length: Math.min(pos, end) - offset, kind: first.kind, depth: 0 };
    if (first.hostOffset !== undefined) ext.hostOffset = first.hostOffset + (offset - unitStart);
    return ext;
  }

  /**
   * extent()'s walk inside one L2 table, from unit-aligned `pos` up to `stop`: where the run of
   * `type` ends. `firstHost` (the run's first unit's host offset, at guest `unitStart`) is set
   * for types that keep an allocation; qemu compares the raw offsets, so an unaligned one never
   * continues an aligned run.
   */
  private runInTable(ref: { l2Offset: bigint; table: Buffer }, pos: number, stop: number, type: UnitType, firstHost: number | undefined, unitStart: number, sameTable: boolean): number {
    const { table } = ref;
    const us = this.unitSize;
    const cs = this.h.clusterSize;
    const entries = 2 ** this.h.l2Bits;
    for (; pos < stop; pos += us) {
      const l2Index = Math.floor(pos / cs) % entries;
      const sub = Math.floor((pos % cs) / us);
      const at = l2Index * this.entryBytes;
      const t = this.typeAt(table, at, sub);
      if (t !== type) {
        if (t === 'invalid' && sameTable) {
          const slot = { l2Offset: ref.l2Offset, l2Index, hi: table.readUInt32BE(at), lo: table.readUInt32BE(at + 4) };
          throw this.corrupt(this.mapping({ type: t, sub, slot }, pos) as string);
        }
        return pos;
      }
      if (firstHost !== undefined && hostOffsetOf(table.readUInt32BE(at), table.readUInt32BE(at + 4)) + sub * us !== firstHost + (pos - unitStart)) return pos;
    }
    return pos;
  }

  /**
   * Copies bytes [at, at + dest.length) of the compressed cluster `entry` into `dest`. A whole
   * cluster is decoded straight into `dest`; a part is decoded once and kept, for the reads of
   * the rest of that cluster.
   */
  readCompressed(entry: EntryHalves, dest: Uint8Array, at: number): void {
    const cached = this.lastCompressed;
    if (cached && cached.hi === entry.hi && cached.lo === entry.lo) {
      dest.set(cached.data.subarray(at, at + dest.length));
      return;
    }
    if (at === 0 && dest.length === this.h.clusterSize) {
      const input = this.compressedInput(entry);
      if (this.h.compressionType === 0) inflateZlib(input, this.h.clusterSize, dest);
      else inflateZstd(input, this.h.clusterSize, dest);
      return;
    }
    const input = this.compressedInput(entry);
    const data = this.h.compressionType === 0 ? inflateZlib(input, this.h.clusterSize) : inflateZstd(input, this.h.clusterSize);
    this.lastCompressed = { hi: entry.hi, lo: entry.lo, data };
    dest.set(data.subarray(at, at + dest.length));
  }

  /**
   * The compressed bytes an L2 entry points to, zeros past the end of the file (as readAt reads
   * them). Valid until the next call: the decoders copy what they keep.
   */
  private compressedInput(entry: EntryHalves): Buffer {
    const { hostOffset, length } = compressedSpan(entry.hi, entry.lo, this.h.clusterBits);
    this.inputScratch ??= Buffer.allocUnsafe(2 * this.h.clusterSize);
    const input = this.inputScratch.subarray(0, length);
    const n = hostOffset < this.dev.size ? this.dev.read(input, hostOffset) : 0;
    if (n < length) input.fill(0, n);
    return input;
  }
}
