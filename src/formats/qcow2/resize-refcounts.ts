// Refcount edits for a qcow2 resize: refcount blocks copied into memory, changed cluster by
// cluster as qemu's update_refcount changes them in its cache, then handed out as writes. Only
// clusters an existing refcount block covers can change: a resize that would need a new refcount
// block (qemu's alloc_refcount_block) is refused by the caller before anything is written.
import { readAt } from '../bytes.ts';
import type { BlockDevice } from '../types.ts';
import type { Qcow2Header } from './header.ts';
import type { RepairStep } from '../repair.ts';

/** Most refcount-block bytes one resize holds in memory. */
const MAX_HELD_BYTES = 64 * 1024 * 1024;

/** A refcount structure instar will not edit (too many blocks held, a misplaced block). */
export class RefcountEditRefused extends Error {}

export class RefcountEditor {
  readonly perBlock: number;
  private readonly bits: number;
  private readonly table: Buffer;
  private blocks = new Map<number, { offset: number; bytes: Buffer; dirty: boolean }>();

  constructor(private dev: BlockDevice, private h: Qcow2Header) {
    this.bits = 2 ** h.refcountOrder;
    this.perBlock = (h.clusterSize * 8) / this.bits;
    // refcount_table_clusters is checked at open: at most 8 MiB.
    this.table = readAt(dev, h.refcountTableOffset, h.refcountTableClusters * h.clusterSize);
  }

  /** The refcount block's file offset for table index `i`, 0 when absent. */
  blockOffset(i: number): number {
    if (i >= this.table.length / 8) return 0;
    const offset = this.table.readBigUInt64BE(i * 8) & 0xfffffffffffffe00n;
    if (offset % BigInt(this.h.clusterSize) !== 0n || offset > BigInt(this.dev.size)) throw new RefcountEditRefused('a refcount block is misplaced');
    return Number(offset);
  }

  get tableEntries(): number {
    return this.table.length / 8;
  }

  /** The block covering `cluster`, read once; undefined when the image has none there. */
  private block(cluster: number): Buffer | undefined {
    const i = Math.floor(cluster / this.perBlock);
    let b = this.blocks.get(i);
    if (!b) {
      const offset = this.blockOffset(i);
      if (offset === 0) return undefined;
      if ((this.blocks.size + 1) * this.h.clusterSize > MAX_HELD_BYTES) throw new RefcountEditRefused('the resize changes too many refcount blocks');
      b = { offset, bytes: readAt(this.dev, offset, this.h.clusterSize), dirty: false };
      this.blocks.set(i, b);
    }
    return b.bytes;
  }

  /** Entry `i` of a refcount block. */
  private read(b: Buffer, i: number): bigint {
    const bits = this.bits;
    if (bits < 8) return BigInt((b[Math.floor((i * bits) / 8)] >> ((i * bits) % 8)) & (2 ** bits - 1));
    if (bits === 8) return BigInt(b[i]);
    if (bits === 16) return BigInt(b.readUInt16BE(i * 2));
    if (bits === 32) return BigInt(b.readUInt32BE(i * 4));
    return b.readBigUInt64BE(i * 8);
  }

  private write(b: Buffer, i: number, value: bigint): void {
    const bits = this.bits;
    if (bits < 8) {
      const at = Math.floor((i * bits) / 8);
      const shift = (i * bits) % 8;
      const mask = (2 ** bits - 1) << shift;
      b[at] = (b[at] & ~mask) | (Number(value) << shift);
    } else if (bits === 8) b[i] = Number(value);
    else if (bits === 16) b.writeUInt16BE(Number(value), i * 2);
    else if (bits === 32) b.writeUInt32BE(Number(value), i * 4);
    else b.writeBigUInt64BE(value, i * 8);
  }

  /** The refcount as qemu reads it (0 where no block covers the cluster). */
  get(cluster: number): bigint {
    const b = this.block(cluster);
    return b ? this.read(b, cluster % this.perBlock) : 0n;
  }

  /** Whether a refcount block covers `cluster` (else qemu would have to allocate one). */
  covered(cluster: number): boolean {
    return this.blockOffset(Math.floor(cluster / this.perBlock)) !== 0;
  }

  /** Adds `delta`; false when the result would leave 0..refcount_max (qemu refuses that). */
  add(cluster: number, delta: 1n | -1n): boolean {
    const b = this.block(cluster);
    if (!b) return false;
    const i = cluster % this.perBlock;
    const value = this.read(b, i) + delta;
    if (value < 0n || value > 2n ** BigInt(this.bits) - 1n) return false;
    this.write(b, i, value);
    this.blocks.get(Math.floor(cluster / this.perBlock))!.dirty = true;
    return true;
  }

  /**
   * Whether refcount block `i` counts nothing but (when it sits in its own range) itself, as
   * qemu's qcow2_shrink_reftable asks after a shrink: such a block would be dropped.
   */
  unusedBlock(i: number): boolean {
    const offset = this.blockOffset(i);
    if (offset === 0) return false;
    const bytes = Buffer.from(this.block(i * this.perBlock)!);
    const own = offset / this.h.clusterSize;
    if (Math.floor(own / this.perBlock) === i) this.write(bytes, own % this.perBlock, 0n);
    return bytes.every((v) => v === 0);
  }

  /** Writes of the blocks changed since the last flush, in table order (qemu's cache flush). */
  flush(): RepairStep[] {
    const steps: RepairStep[] = [];
    for (const i of [...this.blocks.keys()].sort((a, b) => a - b)) {
      const b = this.blocks.get(i)!;
      if (!b.dirty) continue;
      steps.push({ kind: 'write', pos: b.offset, bytes: Buffer.from(b.bytes) });
      b.dirty = false;
    }
    return steps;
  }
}
