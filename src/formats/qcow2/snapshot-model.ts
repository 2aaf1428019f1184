// The image as qemu's qcow2 driver holds it while a snapshot operation runs: refcounts
// (refcount-update.ts), an L2 table cache, the active L1 table in memory, and the other writes
// qemu makes (L1 copies, the snapshot table, the header). The planners replay qemu's steps over
// this model; `plan()` then turns the difference from the file into crash-safe repair steps.
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import type { RepairStep } from '../repair.ts';
import { compressedSpan } from './l2-entry.ts';
import { PlanRefusal, RefcountModel } from './refcount-update.ts';
import type { Qcow2Header } from './header.ts';
import { allocClusters, freeClusters } from './allocator.ts';
import { serializeSnapshotTable, type SnapshotEntry } from './snapshot-table.ts';

export const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;
/** L1E_OFFSET_MASK and L2E_OFFSET_MASK. */
const OFFSET_MASK = 0x00fffffffffffe00n;
/** Most bytes of tables one plan holds in memory. */
const MAX_HELD_BYTES = 256 * 1024 * 1024;
/**
 * Most bytes a plan may add past the end of the file: an L1 copy (32 MiB at most), a snapshot
 * table (64 MiB at most), new refcount blocks, with room to spare. More means refcounts that
 * claim clusters far past the end (a hostile image would have instar grow a huge sparse file).
 */
const MAX_GROWTH = 192 * 1024 * 1024;

/** A region the op rewrites: `fresh` = in clusters it allocated; `table` = 8-byte L1/L2 entries. */
interface Region {
  pos: number;
  bytes: Buffer;
  kind: 'fresh' | 'table' | 'commit';
}

export class SnapshotModel {
  readonly refs: RefcountModel;
  readonly cs: number;
  /** The active L1 table (s->l1_table). */
  readonly activeL1: bigint[];
  private readonly l2Cache = new Map<number, Buffer>();
  /** L2 tables this plan changed: kept until plan() writes them; the others are read again. */
  private readonly dirtyL2 = new Set<number>();
  private readonly writes = new Map<number, Region>();
  private held = 0;

  constructor(readonly dev: BlockDevice, readonly h: Qcow2Header) {
    this.cs = h.clusterSize;
    this.refs = new RefcountModel(dev, h);
    this.activeL1 = this.readL1(h.l1TableOffset, h.l1Size);
  }

  private hold(bytes: number): void {
    this.held += bytes;
    if (this.held > MAX_HELD_BYTES) throw new PlanRefusal('the operation would hold too many tables in memory; nothing was written');
  }

  /** Reads bytes as the file will hold them after this plan's earlier writes. */
  read(pos: number, length: number): Buffer {
    if (pos + length > this.dev.size) throw new PlanRefusal(`instar refuses this qcow2 image: a table at offset ${pos} reaches past the end of the file; nothing was written`);
    const b = readAt(this.dev, pos, length);
    for (const w of this.writes.values()) {
      const start = Math.max(pos, w.pos);
      const end = Math.min(pos + length, w.pos + w.bytes.length);
      if (start < end) w.bytes.copy(b, start - pos, start - w.pos, end - w.pos);
    }
    return b;
  }

  readL1(offset: bigint, size: number): bigint[] {
    const b = size === 0 ? Buffer.alloc(0) : this.read(Number(offset), size * 8);
    this.hold(size * 8);
    return Array.from({ length: size }, (_, i) => b.readBigUInt64BE(i * 8));
  }

  /** Records a write qemu makes; `fresh` when it lands in clusters allocated by this op. */
  write(pos: number, bytes: Buffer, kind: Region['kind']): void {
    this.hold(bytes.length);
    this.writes.set(pos, { pos, bytes, kind });
  }

  writeL1(offset: bigint, l1: readonly bigint[], kind: Region['kind']): void {
    if (l1.length === 0) return;
    const b = Buffer.alloc(l1.length * 8);
    l1.forEach((e, i) => b.writeBigUInt64BE(e, i * 8));
    this.write(Number(offset), b, kind);
  }

  private l2Table(offset: number): Buffer {
    let t = this.l2Cache.get(offset);
    if (!t) {
      this.hold(this.cs);
      t = this.read(offset, this.cs);
      this.l2Cache.set(offset, t);
    }
    return t;
  }

  /** A cluster's refcount reached 0: qemu drops a cached L2 table there without writing it. */
  private dropFreed(from: number): void {
    for (const cluster of this.refs.freed.slice(from)) {
      this.l2Cache.delete(cluster * this.cs);
      this.dirtyL2.delete(cluster * this.cs);
    }
  }

  /**
   * qcow2_update_snapshot_refcount: adds `addend` (+1, -1 or 0) to the refcount of every cluster
   * the L1 table reaches and sets each entry's COPIED flag to (refcount == 1). `l1` is the
   * in-memory active table when given (qemu's special case), else read from `l1Offset`.
   */
  updateSnapshotRefcount(l1Offset: bigint, l1Size: number, addend: number, l1 = this.readL1(l1Offset, l1Size)): void {
    const cs = this.cs;
    const abs = Math.abs(addend);
    const decrease = addend < 0;
    let l1Modified = false;
    // Each L2 table once per table walked: bounds the work by the file's size (a table shared by
    // two L1 entries is a corruption qemu would count twice).
    const seen = new Set<number>();
    for (let i = 0; i < l1.length; i++) {
      const oldL1 = l1[i];
      if (oldL1 === 0n) continue;
      let l2Offset = oldL1 & OFFSET_MASK;
      if (l2Offset % BigInt(cs) !== 0n || l2Offset === 0n) throw new PlanRefusal(`instar refuses this qcow2 image: L1 entry ${i} points at an invalid L2 table offset; nothing was written`);
      const l2Pos = Number(l2Offset);
      if (seen.has(l2Pos)) throw new PlanRefusal(`instar refuses this qcow2 image: L1 entry ${i} points at an L2 table already in use; nothing was written`);
      seen.add(l2Pos);
      const table = this.l2Table(l2Pos);
      // Extended entries are 16 bytes: the first 8 as a standard entry, then the subcluster
      // bitmap, which a snapshot never changes (and which has no COPIED flag).
      const entrySize = this.h.extendedL2 ? 16 : 8;
      for (let j = 0; j < cs / entrySize; j++) {
        const old = table.readBigUInt64BE(j * entrySize);
        let entry = old & ~COPIED;
        const offset = entry & OFFSET_MASK;
        let refcount = 0;
        if (entry & COMPRESSED) {
          if (addend !== 0) {
            const span = compressedSpan(Number(entry >> 32n), Number(entry & 0xffffffffn), this.h.clusterBits);
            this.track(() => this.refs.update(span.hostOffset, span.length, abs, decrease));
          }
          refcount = 2; // compressed clusters are never modified in place
        } else if (offset !== 0n) {
          if (offset % BigInt(cs) !== 0n) throw new PlanRefusal(`instar refuses this qcow2 image: L2 entry ${j} of the table at ${l2Pos} is not cluster aligned; nothing was written`);
          const cluster = Number(offset) / cs;
          if (addend !== 0) this.track(() => this.refs.update(cluster * cs, 1, abs, decrease));
          refcount = this.refs.get(cluster);
        }
        // Otherwise unallocated or plain zero (ZERO set, no offset): refcount 0.
        if (refcount === 1) entry |= COPIED;
        // The table may have been freed (and dropped) while its own entries freed clusters.
        if (entry !== old && this.l2Cache.get(l2Pos) === table) {
          table.writeBigUInt64BE(entry, j * entrySize);
          this.dirtyL2.add(l2Pos);
        }
      }
      // An unchanged table need not stay in memory (a big image has thousands).
      if (!this.dirtyL2.has(l2Pos) && this.l2Cache.delete(l2Pos)) this.held -= cs;
      if (addend !== 0) this.track(() => this.refs.update(l2Pos, 1, abs, decrease));
      if (this.refs.get(l2Pos / cs) === 1) l2Offset |= COPIED;
      if (l2Offset !== oldL1) {
        l1[i] = l2Offset;
        l1Modified = true;
      }
    }
    // Only a table that stays in use is written back (qemu: addend >= 0).
    if (addend >= 0 && l1Modified) this.writeL1(l1Offset, l1, 'table');
  }

  private track(update: () => void): void {
    const before = this.refs.freed.length;
    update();
    if (this.refs.freed.length > before) this.dropFreed(before);
  }

  /** The L2 tables the plan changed, as table writes (cache flush). */
  private flushL2(): void {
    for (const [pos, table] of this.l2Cache) {
      if (!table.equals(readAt(this.dev, pos, this.cs))) this.writes.set(pos, { pos, bytes: table, kind: 'table' });
    }
  }

  /**
   * The steps that take the file from its state to the model's, ordered so that a crash between
   * any two leaves at worst leaked clusters or COPIED flags cleared on clusters used once:
   * the file grown; new clusters' contents; COPIED flags cleared; refcounts raised (new refcount
   * blocks included), then hooked into the refcount table; the commit (header, rewritten
   * L1 entries); refcounts lowered; COPIED flags set; freed clusters zeroed (qemu discards them).
   */
  plan(): { steps: RepairStep[]; fileSize: number; freeClusterIndex: number } {
    this.flushL2();
    const freedNow = new Set(this.refs.freed.filter((c) => this.refs.get(c) === 0));
    const regions = [...this.writes.values()].filter((w) => !freedNow.has(Math.floor(w.pos / this.cs)));
    let fileSize = this.dev.size;
    for (const w of regions) fileSize = Math.max(fileSize, w.pos + w.bytes.length);
    // A new refcount block (or a grown refcount table) may lie past every other write.
    fileSize = Math.max(fileSize, this.refs.end);
    // Clusters of a refcount table this plan replaced are reused only after the header switch.
    const retired = this.refs.retiredClusters();
    const clustersOf = (w: Region) => Array.from({ length: Math.ceil((w.pos + w.bytes.length) / this.cs) - Math.floor(w.pos / this.cs) }, (_, i) => Math.floor(w.pos / this.cs) + i);
    const late = (w: Region) => w.kind === 'fresh' && clustersOf(w).some((c) => retired.has(c));
    for (const w of regions) {
      if (w.kind !== 'fresh') continue;
      for (const c of clustersOf(w)) {
        if (this.refs.original(c) !== 0 && !retired.has(c)) throw new PlanRefusal('internal error: a new table would overwrite a cluster in use; nothing was written');
      }
    }
    if (fileSize - this.dev.size > MAX_GROWTH + 64 * this.cs) {
      throw new PlanRefusal(`instar refuses this qcow2 image: its refcounts would place new clusters ${fileSize - this.dev.size} bytes past the end of the file; nothing was written`);
    }
    const steps: RepairStep[] = [];
    const phase = (list: RepairStep[]) => {
      if (list.length > 0) steps.push(...list, { kind: 'barrier' });
    };
    // qemu's writes past the end grow the file; instar grows it first (the new tail is unused).
    if (fileSize > this.dev.size) phase([{ kind: 'truncate', size: fileSize }]);
    phase(regions.filter((w) => w.kind === 'fresh' && !late(w)).map((w) => ({ kind: 'write', pos: w.pos, bytes: w.bytes })));
    const tables = regions.filter((w) => w.kind === 'table').map((w) => ({ w, old: readAt(this.dev, w.pos, w.bytes.length) }));
    const cleared = tables.map(({ w, old }) => ({ w, bytes: mergeEntries(old, w.bytes, 'flags-cleared') }));
    phase(cleared.filter((t) => !t.bytes.equals(readAt(this.dev, t.w.pos, t.bytes.length))).map((t) => ({ kind: 'write', pos: t.w.pos, bytes: t.bytes })));
    const blocks = this.refs.changedBlocks();
    // A new refcount block in a replaced refcount table's clusters comes with the switch.
    phase(blocks.filter((b) => !retired.has(b.offset / this.cs)).map((b) => ({ kind: 'write', pos: b.offset, bytes: this.raised(b.original, b.current) })));
    // New refcount blocks count from here on: the table points at them once they are written,
    // in the order qemu hooks them up, so that a block is never hooked before the one counting it.
    phase(this.refs.tableWrites('hooked').map((w): RepairStep => ({ kind: 'write', pos: w.pos, bytes: w.bytes })));
    phase(regions.filter(late).map((w): RepairStep => ({ kind: 'write', pos: w.pos, bytes: w.bytes })));
    const committed = tables.map(({ w, old }) => ({ w, bytes: mergeEntries(old, w.bytes, 'committed') }));
    phase([
      ...regions.filter((w) => w.kind === 'commit').map((w): RepairStep => ({ kind: 'write', pos: w.pos, bytes: w.bytes })),
      ...committed.filter((t, i) => !t.bytes.equals(cleared[i].bytes)).map((t): RepairStep => ({ kind: 'write', pos: t.w.pos, bytes: t.bytes })),
    ]);
    phase(blocks.filter((b) => !b.current.equals(this.raised(b.original, b.current))).map((b) => ({ kind: 'write', pos: b.offset, bytes: b.current })));
    phase(committed.filter((t) => !t.bytes.equals(t.w.bytes)).map((t) => ({ kind: 'write', pos: t.w.pos, bytes: t.w.bytes })));
    const zeros: RepairStep[] = [];
    for (const c of [...freedNow].sort((a, b) => a - b)) {
      const pos = c * this.cs;
      if (pos < fileSize) zeros.push({ kind: 'discard', pos, length: Math.min(this.cs, fileSize - pos) });
    }
    phase(zeros);
    return { steps, fileSize, freeClusterIndex: this.refs.freeClusterIndex };
  }

  /** A refcount block with every entry at the larger of its old and new values. */
  private raised(original: Buffer, current: Buffer): Buffer {
    const out = Buffer.from(original);
    for (let i = 0; i < this.refs.perBlock; i++) {
      const a = this.refs.entry(original, i);
      const b = this.refs.entry(current, i);
      if (b > a) this.refs.setEntry(out, i, b);
    }
    return out;
  }
}

/**
 * An intermediate table between `old` and `next`, entry by entry. 'flags-cleared': entries whose
 * only change is COPIED take the flag only when both have it; others stay old. 'committed': the
 * same, but entries that point elsewhere take their new value with COPIED clear.
 */
function mergeEntries(old: Buffer, next: Buffer, stage: 'flags-cleared' | 'committed'): Buffer {
  if (old.length !== next.length || old.length % 8 !== 0) throw new ImageError('internal error: table sizes differ');
  const out = Buffer.from(old);
  for (let at = 0; at < old.length; at += 8) {
    const a = old.readBigUInt64BE(at);
    const b = next.readBigUInt64BE(at);
    if (a === b) continue;
    if (((a ^ b) & ~COPIED) === 0n) out.writeBigUInt64BE(a & b, at);
    else if (stage === 'committed') out.writeBigUInt64BE(b & ~COPIED, at);
  }
  return out;
}

/** Offset of nb_snapshots in the header; snapshots_offset follows it (12 bytes in all). */
const NB_SNAPSHOTS_AT = 60;

/**
 * qcow2_write_snapshots: the table goes to new clusters, the header points at it, the old one is
 * freed. Returns the new table's offset (0 for an empty list).
 */
export function writeSnapshots(model: SnapshotModel, list: readonly SnapshotEntry[], oldTableBytes: number): number {
  const table = serializeSnapshotTable(list);
  const offset = table.length === 0 ? 0 : allocClusters(model.refs, table.length);
  if (table.length > 0) model.write(offset, table, 'fresh');
  const header = Buffer.alloc(12);
  header.writeUInt32BE(list.length, 0);
  header.writeBigUInt64BE(BigInt(offset), 4);
  model.write(NB_SNAPSHOTS_AT, header, 'commit');
  freeClusters(model.refs, Number(model.h.snapshotsOffset), oldTableBytes);
  return offset;
}
