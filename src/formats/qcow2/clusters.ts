// Guest offset → host offset through the L1 and L2 tables (standard 8-byte L2 entries).
import { ImageError, type BlockDevice, type Extent } from '../types.ts';
import { readAt } from '../bytes.ts';
import type { Qcow2Header } from './header.ts';

const OFFSET_MASK = 0x00fffffffffffe00n;
const COMPRESSED = 1n << 62n;
const ZERO = 1n;

export type ClusterKind = 'data' | 'zero' | 'unallocated' | 'compressed';

export interface ClusterMapping {
  kind: ClusterKind;
  /** Host offset of the cluster for 'data' (and preallocated 'zero'). */
  hostOffset?: number;
}

/** Looks up clusters; keeps the L1 table and the most recent L2 tables in memory. */
export class ClusterMap {
  private l1?: Buffer;
  private l2Cache = new Map<bigint, Buffer>();

  constructor(private dev: BlockDevice, private h: Qcow2Header) {
    if (h.extendedL2) throw new ImageError('reading qcow2 images with extended L2 entries is not implemented yet');
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

  /** The mapping of the cluster holding guest offset `guest` (< virtual size). */
  lookup(guest: number): ClusterMapping {
    const clusterIndex = Math.floor(guest / this.h.clusterSize);
    const l2Entries = 2 ** this.h.l2Bits;
    const l1Index = Math.floor(clusterIndex / l2Entries);
    const l2Index = clusterIndex % l2Entries;
    const l1 = this.l1Table();
    if (l1Index >= this.h.l1Size) return { kind: 'unallocated' };
    const l2Offset = l1.readBigUInt64BE(l1Index * 8) & OFFSET_MASK;
    if (l2Offset === 0n) return { kind: 'unallocated' };
    if (l2Offset % BigInt(this.h.clusterSize) !== 0n) {
      throw new ImageError(`L2 table offset 0x${l2Offset.toString(16)} unaligned (L1 index: 0x${l1Index.toString(16)})`);
    }
    const entry = this.l2Table(l2Offset).readBigUInt64BE(l2Index * 8);
    if (entry & COMPRESSED) return { kind: 'compressed' };
    const host = entry & OFFSET_MASK;
    if (entry & ZERO && this.h.version === 3) return host ? { kind: 'zero', hostOffset: Number(host) } : { kind: 'zero' };
    if (host === 0n) return { kind: 'unallocated' };
    if (host % BigInt(this.h.clusterSize) !== 0n) {
      throw new ImageError(`Cluster allocation offset 0x${host.toString(16)} unaligned (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${l2Index.toString(16)})`);
    }
    return { kind: 'data', hostOffset: Number(host) };
  }

  /** A run of clusters with the same kind (and contiguous host offsets for data). */
  extent(offset: number, length: number, virtualSize: number): Extent {
    const cs = this.h.clusterSize;
    const end = Math.min(virtualSize, offset + length);
    const first = this.lookup(offset);
    let pos = (Math.floor(offset / cs) + 1) * cs;
    while (pos < end) {
      const next = this.lookup(pos);
      if (next.kind !== first.kind) break;
      if (first.kind === 'data' && next.hostOffset !== first.hostOffset! + (pos - offset) + (offset % cs)) break;
      pos += cs;
    }
    const len = Math.min(pos, end) - offset;
    const kind = first.kind === 'compressed' ? 'data' : first.kind;
    const ext: Extent = { offset, length: len, kind, depth: 0 };
    if (first.kind === 'compressed') ext.compressed = true;
    if (first.kind === 'data') ext.hostOffset = first.hostOffset! + (offset % cs);
    return ext;
  }
}
