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

/** The mapping of one unit: a cluster, or a subcluster with extended L2 entries. */
export interface UnitMapping {
  kind: UnitKind;
  /** Host offset of the unit's first byte, for 'data'. */
  hostOffset?: number;
  /** The L2 entry, for 'compressed'. */
  l2Entry?: bigint;
}

/** Looks up units; keeps the L1 table and the most recent L2 tables in memory. */
export class ClusterMap {
  /** Bytes covered by one mapping: the subcluster size with extended L2 entries. */
  readonly unitSize: number;
  private l1?: Buffer;
  private l2Cache = new Map<bigint, Buffer>();
  private entryBytes: number;
  private lastCompressed?: { entry: bigint; data: Buffer };
  private corruptionSignaled = false;

  constructor(private dev: BlockDevice, private h: Qcow2Header) {
    this.entryBytes = h.extendedL2 ? 16 : 8;
    this.unitSize = h.extendedL2 ? h.clusterSize / 32 : h.clusterSize;
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

  /** Whether the L2 table covering guest offset `guest` is absent (an empty L1 entry). */
  private l2Missing(guest: number): boolean {
    const l1Index = Math.floor(guest / this.h.clusterSize / 2 ** this.h.l2Bits);
    return l1Index >= this.h.l1Size || (this.l1Table().readBigUInt64BE(l1Index * 8) & OFFSET_MASK) === 0n;
  }

  /** The mapping of the unit holding guest offset `guest` (< virtual size). */
  lookup(guest: number): UnitMapping {
    const cs = this.h.clusterSize;
    const clusterIndex = Math.floor(guest / cs);
    const l2Entries = 2 ** this.h.l2Bits;
    const l1Index = Math.floor(clusterIndex / l2Entries);
    const l2Index = clusterIndex % l2Entries;
    if (l1Index >= this.h.l1Size) return { kind: 'unallocated' };
    const l2Offset = this.l1Table().readBigUInt64BE(l1Index * 8) & OFFSET_MASK;
    if (l2Offset === 0n) return { kind: 'unallocated' };
    if (l2Offset % BigInt(cs) !== 0n) {
      throw this.corrupt(`L2 table offset ${hexAlt(l2Offset)} unaligned (L1 index: ${hexAlt(l1Index)})`);
    }
    const table = this.l2Table(l2Offset);
    const entry = table.readBigUInt64BE(l2Index * this.entryBytes);
    // Only for the corruption messages: built on the error paths, not for every lookup.
    const where = () => `(L2 offset: ${hexAlt(l2Offset)}, L2 index: ${hexAlt(l2Index)})`;
    if (entry & COMPRESSED) {
      if (this.h.incompatible & INCOMPAT.dataFile) throw this.corrupt(`Compressed cluster entry found in image with external data file ${where()}`);
      return { kind: 'compressed', l2Entry: entry };
    }
    const host = entry & OFFSET_MASK;
    if (!this.h.extendedL2 && entry & ZERO) {
      if (this.h.version < 3) throw this.corrupt(`Zero cluster entry found in pre-v3 image ${where()}`);
      if (host % BigInt(cs) !== 0n) throw this.corrupt(`Cluster allocation offset ${hexAlt(host)} unaligned ${where()}`);
      // A zero cluster that keeps its allocation: qemu's map still reports where it is.
      return host === 0n ? { kind: 'zero' } : { kind: 'zero', hostOffset: Number(host) };
    }
    if (host % BigInt(cs) !== 0n) throw this.corrupt(`Cluster allocation offset ${hexAlt(host)} unaligned ${where()}`);
    // With an external data file, offset 0 is a real place in it when the entry is marked COPIED.
    const atZero = host === 0n && !((this.h.incompatible & INCOMPAT.dataFile) !== 0n && (entry & COPIED) !== 0n);
    if (!this.h.extendedL2) return atZero ? { kind: 'unallocated' } : { kind: 'data', hostOffset: Number(host) };
    const bitmap = table.readBigUInt64BE(l2Index * 16 + 8);
    const sub = Math.floor((guest % cs) / this.unitSize);
    const allocated = (bitmap >> BigInt(sub)) & 1n;
    const zero = (bitmap >> BigInt(32 + sub)) & 1n;
    if (allocated && (zero || host === 0n)) {
      throw this.corrupt(`Invalid cluster entry found ${where()}`);
    }
    if (zero) return host === 0n ? { kind: 'zero' } : { kind: 'zero', hostOffset: Number(host) + sub * this.unitSize };
    if (allocated) return { kind: 'data', hostOffset: Number(host) + sub * this.unitSize };
    // An unallocated subcluster of an allocated cluster still has a place: qemu's map shows it.
    return host === 0n ? { kind: 'unallocated' } : { kind: 'unallocated', hostOffset: Number(host) + sub * this.unitSize };
  }

  /** A run of units with the same kind (and contiguous host offsets for data). */
  extent(offset: number, length: number, virtualSize: number): Extent {
    const us = this.unitSize;
    const end = Math.min(virtualSize, offset + length);
    const first = this.lookup(offset);
    const unitStart = offset - (offset % us);
    let pos = unitStart + us;
    // Compressed clusters are reported one at a time: each has its own host location.
    const plainHole = first.kind === 'unallocated' && first.hostOffset === undefined;
    const l2Span = this.h.clusterSize * 2 ** this.h.l2Bits;
    while (pos < end && first.kind !== 'compressed') {
      // A missing L2 table is one hole: step over its whole span (sparse disks can be petabytes).
      if (plainHole && this.l2Missing(pos)) {
        pos = (Math.floor(pos / l2Span) + 1) * l2Span;
        continue;
      }
      const next = this.lookup(pos);
      if (next.kind !== first.kind) break;
      if (first.hostOffset !== undefined && next.hostOffset !== first.hostOffset + (pos - unitStart)) break;
      pos += us;
    }
    if (first.kind === 'compressed') pos = offset - (offset % this.h.clusterSize) + this.h.clusterSize;
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
