// Guest offset → host offset through the L1 and L2 tables, with standard (8-byte) and extended
// (16-byte, 32 subclusters) L2 entries, and compressed clusters.
import { ImageError, type BlockDevice, type Extent } from '../types.ts';
import { readAt } from '../bytes.ts';
import { inflateZlib, inflateZstd } from './decompress.ts';
import { INCOMPAT, type Qcow2Header } from './header.ts';

const OFFSET_MASK = 0x00fffffffffffe00n;
const COMPRESSED = 1n << 62n;
const ZERO = 1n;
const COPIED = 1n << 63n;

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

/**
 * qemu's QCow2SubclusterType: what one L2 entry says about one unit. Runs are made of units of
 * the exact same type, so a zero unit that keeps its allocation never joins a plain one.
 */
type UnitType = 'normal' | 'zero-plain' | 'zero-alloc' | 'unallocated-plain' | 'unallocated-alloc' | 'compressed' | 'invalid';

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
  /** The L2 entry, for 'compressed'. */
  l2Entry?: bigint;
}

/** Where one guest cluster's L2 entry is, and what it holds. */
interface Slot {
  l2Offset: bigint;
  l2Index: number;
  entry: bigint;
  /** The subcluster bitmap (extended L2 entries); 0 otherwise. */
  bitmap: bigint;
}

/** One unit: its type, which subcluster of its cluster it is, and its L2 entry where it has one. */
interface Unit {
  type: UnitType;
  sub: number;
  slot?: Slot;
}

/** Looks up units; keeps the L1 table and the most recent L2 tables in memory. */
export class ClusterMap {
  /** Bytes covered by one mapping: the subcluster size with extended L2 entries. */
  readonly unitSize: number;
  private l1?: Buffer;
  private l2Cache = new Map<bigint, Buffer>();
  private entryBytes: number;
  private l2Span: number;
  private lastCompressed?: { entry: bigint; data: Buffer };
  private corruptionSignaled = false;

  constructor(private dev: BlockDevice, private h: Qcow2Header) {
    this.entryBytes = h.extendedL2 ? 16 : 8;
    this.unitSize = h.extendedL2 ? h.clusterSize / 32 : h.clusterSize;
    this.l2Span = h.clusterSize * 2 ** h.l2Bits;
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

  private corrupt(what: string): Qcow2CorruptionError {
    const first = !this.corruptionSignaled;
    this.corruptionSignaled = true;
    return new Qcow2CorruptionError(first ? `qcow2: Image is corrupt: ${what}; further non-fatal corruption events will be suppressed` : undefined);
  }

  /** The L2 table offset for guest offset `guest`; 0 when the L1 table maps none. */
  private l2OffsetOf(guest: number): bigint {
    const l1Index = Math.floor(guest / this.l2Span);
    return l1Index >= this.h.l1Size ? 0n : this.l1Table().readBigUInt64BE(l1Index * 8) & OFFSET_MASK;
  }

  /**
   * The unit holding `guest`: its type and, with an L2 table, the entry it came from; a message
   * when the L1 entry is corrupt (qemu checks that before it reads the table).
   */
  private unit(guest: number): Unit | string {
    const cs = this.h.clusterSize;
    const sub = Math.floor((guest % cs) / this.unitSize);
    const l2Offset = this.l2OffsetOf(guest);
    if (l2Offset === 0n) return { type: 'unallocated-plain', sub };
    if (l2Offset % BigInt(cs) !== 0n) return `L2 table offset ${hexAlt(l2Offset)} unaligned (L1 index: ${hexAlt(Math.floor(guest / this.l2Span))})`;
    const table = this.l2Table(l2Offset);
    const l2Index = Math.floor(guest / cs) % 2 ** this.h.l2Bits;
    const at = l2Index * this.entryBytes;
    const slot = { l2Offset, l2Index, entry: table.readBigUInt64BE(at), bitmap: this.h.extendedL2 ? table.readBigUInt64BE(at + 8) : 0n };
    return { type: this.typeOf(slot, sub), sub, slot };
  }

  /** qemu's qcow2_get_subcluster_type: no error of its own; `invalid` checks the whole bitmap. */
  private typeOf(s: Slot, sub: number): UnitType {
    const { entry, bitmap } = s;
    if (entry & COMPRESSED) return 'compressed';
    const host = entry & OFFSET_MASK;
    if (!this.h.extendedL2 && entry & ZERO) return host === 0n ? 'zero-plain' : 'zero-alloc';
    // With an external data file, offset 0 is a real place in it when the entry is marked COPIED.
    const allocated = host !== 0n || ((this.h.incompatible & INCOMPAT.dataFile) !== 0n && (entry & COPIED) !== 0n);
    if (!this.h.extendedL2) return allocated ? 'normal' : 'unallocated-plain';
    const zeroBit = (bitmap >> BigInt(32 + sub)) & 1n;
    if (allocated) {
      if ((bitmap >> 32n) & bitmap & 0xffffffffn) return 'invalid';
      if (zeroBit) return 'zero-alloc';
      return (bitmap >> BigInt(sub)) & 1n ? 'normal' : 'unallocated-alloc';
    }
    if (bitmap & 0xffffffffn) return 'invalid';
    return zeroBit ? 'zero-plain' : 'unallocated-plain';
  }

  /**
   * A unit's mapping as qemu's qcow2_get_host_offset checks the first entry of a request, or the
   * corruption message it fails with (pure: whether to signal it is the caller's choice).
   */
  private mapping(u: Unit | string, guest: number): UnitMapping | string {
    if (typeof u === 'string') return u;
    const { type, slot, sub } = u;
    if (!slot) return { kind: 'unallocated' };
    const where = `(L2 offset: ${hexAlt(slot.l2Offset)}, L2 index: ${hexAlt(slot.l2Index)})`;
    if (this.h.version < 3 && (type === 'zero-plain' || type === 'zero-alloc')) return `Zero cluster entry found in pre-v3 image ${where}`;
    // qemu's format string joins "found " and " (L2 offset", hence two spaces.
    if (type === 'invalid') return `Invalid cluster entry found  ${where}`;
    if (type === 'compressed') {
      if (this.h.incompatible & INCOMPAT.dataFile) return `Compressed cluster entry found in image with external data file ${where}`;
      return { kind: 'compressed', l2Entry: slot.entry };
    }
    if (type === 'zero-plain' || type === 'unallocated-plain') return { kind: KIND[type] };
    const host = slot.entry & OFFSET_MASK;
    const cs = this.h.clusterSize;
    if (host % BigInt(cs) !== 0n) return `Cluster allocation offset ${hexAlt(host)} unaligned ${where}`;
    // An external data file maps each guest cluster to the same offset in it (qemu's own wording,
    // unbalanced parenthesis included).
    const guestCluster = guest - (guest % cs);
    if (this.h.incompatible & INCOMPAT.dataFile && host !== BigInt(guestCluster)) {
      return `External data file host cluster offset ${hexAlt(host)} does not match guest cluster offset: ${hexAlt(guestCluster)}, L2 index: ${hexAlt(slot.l2Index)})`;
    }
    return { kind: KIND[type], hostOffset: Number(host) + sub * this.unitSize };
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
   */
  extent(offset: number, length: number, virtualSize: number): Extent {
    const us = this.unitSize;
    const cs = this.h.clusterSize;
    const end = Math.min(virtualSize, offset + length);
    const firstUnit = this.unit(offset);
    const first = this.lookup(offset);
    const firstType = (firstUnit as Unit).type;
    const firstTable = Math.floor(offset / this.l2Span);
    const unitStart = offset - (offset % us);
    // Compressed clusters are reported one at a time: each has its own host location.
    let pos = first.kind === 'compressed' ? offset - (offset % cs) + cs : unitStart + us;
    while (pos < end && first.kind !== 'compressed') {
      // A missing L2 table is one hole: step over its whole span (sparse disks can be petabytes).
      if (firstType === 'unallocated-plain' && this.l2OffsetOf(pos) === 0n) {
        pos = (Math.floor(pos / this.l2Span) + 1) * this.l2Span;
        continue;
      }
      const u = this.unit(pos);
      if (Math.floor(pos / this.l2Span) !== firstTable) {
        if (typeof this.mapping(u, pos) === 'string') break;
      } else if (typeof u !== 'string' && u.type === 'invalid') {
        throw this.corrupt(this.mapping(u, pos) as string);
      }
      if (typeof u === 'string' || u.type !== firstType) break;
      // qemu compares the entry's raw offset (an unaligned one never matches an aligned run).
      if (first.hostOffset !== undefined && u.slot && Number(u.slot.entry & OFFSET_MASK) + u.sub * us !== first.hostOffset + (pos - unitStart)) break;
      pos += us;
    }
    const ext: Extent = { offset, length: Math.min(pos, end) - offset, kind: first.kind === 'compressed' ? 'data' : first.kind, depth: 0 };
    if (first.kind === 'compressed') ext.compressed = true;
    if (first.hostOffset !== undefined) ext.hostOffset = first.hostOffset + (offset - unitStart);
    return ext;
  }

  /** Inflates one compressed cluster (zlib: raw deflate, as qemu writes it). */
  readCompressed(l2Entry: bigint): Buffer {
    if (this.lastCompressed?.entry === l2Entry) return this.lastCompressed.data;
    const data = this.inflate(l2Entry);
    this.lastCompressed = { entry: l2Entry, data };
    return data;
  }

  private inflate(l2Entry: bigint): Buffer {
    const h = this.h;
    const csizeShift = BigInt(62 - (h.clusterBits - 8));
    const hostOffset = l2Entry & ((1n << csizeShift) - 1n);
    const sectors = Number((l2Entry >> csizeShift) & ((1n << BigInt(h.clusterBits - 8)) - 1n)) + 1;
    // At most 2^(cluster_bits-8) sectors: twice a cluster at most, so bounded.
    const csize = sectors * 512 - Number(hostOffset % 512n);
    const input = readAt(this.dev, hostOffset, csize);
    return h.compressionType === 0 ? inflateZlib(input, h.clusterSize) : inflateZstd(input, h.clusterSize);
  }
}
