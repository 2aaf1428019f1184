// The two sides of a qcow2 refcount check: the references counted by walking the metadata (one
// small counter per host cluster, sized by the file's length, never by the virtual size) and the
// refcounts the image stores in its refcount blocks.
import { readAt, requestOk } from '../bytes.ts';
import { ImageError, type BlockDevice } from '../types.ts';
import type { Qcow2Header } from './header.ts';
import { readRefcount } from './refcount-entry.ts';

/** A refcount as read: a number while exact, a bigint beyond 2^53 (refcount_bits = 64). */
export type Refcount = number | bigint;

/** Host clusters instar counts at most (one byte each): 256 Mi, e.g. a 16 TiB file of 64 KiB clusters. */
export const MAX_CHECKED_CLUSTERS = 256 * 1024 * 1024;

/** References found per host cluster; counters past 254 spill into a map. */
export class ComputedRefcounts {
  private small: Uint8Array;
  private big = new Map<number, number>();
  /** Clusters covered: the file's, plus at most one past its end (qemu's realloc_refcount_array). */
  length: number;

  constructor(clusters: number, readonly max: number) {
    this.length = clusters;
    this.small = new Uint8Array(clusters + 1);
  }

  get(k: number): number {
    const v = this.small[k];
    return v === 255 ? this.big.get(k)! : v;
  }

  /** Adds one reference; false when the counter is at refcount_max already. */
  inc(k: number): boolean {
    if (k >= this.small.length) throw new ImageError('check: a reference beyond the counted clusters');
    if (k >= this.length) this.length = k + 1;
    const v = this.get(k);
    if (v >= this.max) return false;
    if (v + 1 < 255) this.small[k] = v + 1;
    else {
      this.small[k] = 255;
      this.big.set(k, v + 1);
    }
    return true;
  }
}

/** A failed qcow2_get_refcount: the refblock offset is not cluster aligned, or unreadable. */
export class RefcountReadError extends Error {
  constructor(readonly corruption?: string) {
    super('Input/output error');
  }
}

const CACHED_BLOCKS = 64;

/** Reads stored refcounts as qcow2_get_refcount does (table entries, refcount blocks). */
export class StoredRefcounts {
  readonly table: Buffer;
  readonly tableEntries: number;
  private readonly perBlock: number;
  private readonly bits: number;
  private cache = new Map<number, Buffer>();
  private lastIndex = -1;
  private lastBlock?: Buffer;

  constructor(private dev: BlockDevice, private h: Qcow2Header) {
    // refcount_table_clusters is checked at open: at most 8 MiB.
    this.table = readAt(dev, h.refcountTableOffset, h.refcountTableClusters * h.clusterSize);
    this.tableEntries = this.table.length / 8;
    this.bits = 2 ** h.refcountOrder;
    this.perBlock = (h.clusterSize * 8) / this.bits;
  }

  /** The table entry's offset part (REFT_OFFSET_MASK) as hi/lo halves: cheap to test for zero. */
  entryOffset(i: number): bigint {
    return this.table.readBigUInt64BE(i * 8) & 0xfffffffffffffe00n;
  }

  private block(index: number): Buffer | undefined {
    const offset = this.entryOffset(index);
    if (offset === 0n) return undefined;
    if (offset % BigInt(this.h.clusterSize) !== 0n) {
      throw new RefcountReadError(`Refblock offset 0x${offset.toString(16)} unaligned (reftable index: ${index === 0 ? '0' : '0x' + index.toString(16)})`);
    }
    let b = this.cache.get(index);
    if (!b) {
      if (!requestOk(offset, BigInt(this.h.clusterSize))) throw new RefcountReadError();
      if (this.cache.size >= CACHED_BLOCKS) this.cache.delete(this.cache.keys().next().value as number);
      b = readAt(this.dev, offset, this.h.clusterSize);
      this.cache.set(index, b);
    }
    return b;
  }

  /** Whether the whole refcount block of `cluster` is absent (all its refcounts read as 0). */
  blockAbsent(cluster: number): boolean {
    const index = Math.floor(cluster / this.perBlock);
    // Asked for every cluster in order: the block get() read last answers without a BigInt.
    if (index === this.lastIndex) return this.lastBlock === undefined;
    return index >= this.tableEntries || this.entryOffset(index) === 0n;
  }

  get perBlockCount(): number {
    return this.perBlock;
  }

  get(cluster: number): Refcount {
    const index = Math.floor(cluster / this.perBlock);
    if (index >= this.tableEntries) return 0;
    // Lookups come mostly in order: the last block (or its absence) answers without a table read.
    if (index !== this.lastIndex) {
      this.lastBlock = this.block(index);
      this.lastIndex = index;
    }
    const b = this.lastBlock;
    if (!b) return 0;
    return readRefcount(b, cluster % this.perBlock, this.bits);
  }
}
