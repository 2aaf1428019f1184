// Guest data written into an EXISTING qcow2 image (commit's base, safe rebase's top): a pure
// planner. It replays qemu's allocator (allocator.ts over RefcountModel) in ascending virtual
// order, as qcow2_co_pwritev_part allocates (an L2 table when its L1 entry is empty, then the
// data cluster), and returns steps for formats/repair.ts in crash-safe order:
//   1. the file grows to hold the new clusters; 2. data (new clusters and clusters written in
//   place); 3. refcount blocks, then new refcount table entries; 4. new L2 tables; 5. changed
//   L2 tables; 6. changed L1 entries.
// A crash after any write therefore leaves clusters that are counted but not yet referenced
// (leaks, which qemu-img check reports and -r leaks repairs), never a reference to an uncounted
// or unwritten cluster. Data does not travel in the plan: 'fill' steps read it when they run.
//
// What instar does not rewrite (nothing is written; PlanRefusal): dirty or corrupt images,
// external data files, encryption, compressed clusters or clusters shared with snapshots that a
// write covers in part or keeps as zeros (qemu would copy them on write), and extended L2
// entries unless the caller writes subclusters as safe rebase does (see `subclusters`).
// An L2 table shared with a snapshot is copied first, and a shared data cluster written whole is
// replaced by a new one, as qemu does.
import { ImageError, type BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { readAt } from '../bytes.ts';
import { AUTOCLEAR, CRYPT, INCOMPAT, parseHeader, type Qcow2Header } from './header.ts';
import { allocBytes, allocClusters, freeClusters, type BytePacker } from './allocator.ts';
import { compressCluster } from './writer-compress.ts';
import { PlanRefusal, RefcountModel } from './refcount-update.ts';
import { invalidBitmap, subclustersWritten, subclustersZeroed, ALL_ZEROES } from './subcluster-bits.ts';

const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;
const ZERO_FLAG = 1n;
/** Offset of the header's incompatible_features. */
const INCOMPATIBLE_AT = 72;
const OFFSET_MASK = 0x00fffffffffffe00n;
/** Most bytes one 'fill' step writes (adjacent clusters are written together up to this). */
const MAX_FILL = 1024 * 1024;
/** Most bytes of L2 tables one plan holds. */
const MAX_L2_BYTES = 256 * 1024 * 1024;

/**
 * One write request of whole clusters (virtual, cluster aligned) and what goes there. Requests
 * are planned in order, as qemu's driver serves them: a request's clusters that need allocating
 * (within one L2 table) are allocated together; a later request may cover clusters an earlier
 * one allocated (they are written in place then).
 */
export interface ClusterRun {
  offset: number;
  length: number;
  /** The run reads as zeros: no data cluster is allocated for it where the format can say so. */
  zero: boolean;
}

/** Fills `buf` with the guest bytes the image must show from virtual offset `offset` on. */
export type GuestSource = (buf: Uint8Array, offset: number) => void;

/** Why instar will not write into this image (nothing written), or undefined; `bitmapsOpened`: a bitmap session (bitmap-session.ts) holds its bitmaps. */
export function inPlaceRefusal(h: Qcow2Header, bitmapsOpened = false, subclusters = false): string | undefined {
  if (h.incompatible & INCOMPAT.dirty) return 'its dirty bit is set';
  if (h.incompatible & INCOMPAT.corrupt) return 'it is marked corrupt';
  if (h.incompatible & INCOMPAT.dataFile) return 'it has an external data file';
  if (h.incompatible & INCOMPAT.extendedL2 && !subclusters) return 'it has extended L2 entries';
  if (h.cryptMethod !== CRYPT.none) return 'it is encrypted';
  if (h.autoclear & ~(bitmapsOpened ? AUTOCLEAR.bitmaps : 0n)) return 'autoclear feature bits are set';
  return undefined;
}

const refuse = (why: string): PlanRefusal => new PlanRefusal(`instar cannot write into this qcow2 image (${why}); nothing was written`);

/** One data write: `length` bytes at host `pos` showing virtual bytes from `virt`. */
interface DataWrite {
  pos: number;
  virt: number;
  length: number;
  /** The cluster gets zeros (a zero run in a format that must write them). */
  zero: boolean;
  /** A compressed cluster: `length` is its compressed size, `packed` the guest bytes compressed. */
  packed?: number;
}

class L2Tables {
  private readonly tables = new Map<number, { offset: number; bytes: Buffer; fresh: boolean; dirty: boolean }>();
  private held = 0;
  constructor(private readonly dev: BlockDevice, private readonly cs: number) {}

  get(offset: number, fresh: boolean): Buffer {
    let t = this.tables.get(offset);
    if (!t) {
      this.held += this.cs;
      if (this.held > MAX_L2_BYTES) throw refuse('the write touches too many L2 tables');
      if (!fresh && offset + this.cs > this.dev.size) throw refuse(`an L2 table at offset ${offset} reaches past the end of the file`);
      t = { offset, bytes: fresh ? Buffer.alloc(this.cs) : readAt(this.dev, offset, this.cs), fresh, dirty: fresh };
      this.tables.set(offset, t);
    }
    return t.bytes;
  }

  markDirty(offset: number): void {
    this.tables.get(offset)!.dirty = true;
  }

  writes(fresh: boolean): RepairStep[] {
    return [...this.tables.values()].filter((t) => t.dirty && t.fresh === fresh).sort((a, b) => a.offset - b.offset)
      .map((t) => ({ kind: 'write', pos: t.offset, bytes: Buffer.from(t.bytes) }));
  }
}

export interface InPlaceOptions {
  hasBacking: boolean;
  /**
   * Zero runs as qemu-img convert -n writes them (write-zeroes with MAY_UNMAP, version 3): an
   * allocated cluster is freed (its refcount dropped, the hint moved back, its bytes discarded)
   * and its entry made a zero cluster. Frees make the usual crash order unsafe (a refcount may
   * drop before the L2 entry lets go), so the dirty bit is set around the whole plan: a crash
   * leaves an image qemu opens and repairs.
   */
  unmap?: boolean;
  /** Planned inside a bitmap session (its bitmaps extension is handled there). */
  bitmapsOpened?: boolean;
  /**
   * rebase -c (8.2+, BDRV_REQ_WRITE_COMPRESSED): each data cluster to allocate is compressed
   * (qcow2_co_pwritev_compressed: the image's compression type, the disk's last cluster
   * zero-padded) and packed after the previous one; one that does not shrink is written as it is.
   */
  compress?: boolean;
  /**
   * Extended L2 images are written subcluster by subcluster (runs aligned to subclusters), as
   * qemu's driver writes them: a write allocates (or fills in place) only the subclusters it
   * covers and sets their bits; a zero write sets zero bits (a whole cluster: all 32). Only
   * plain data and zero writes (no unmap, no compression) are modelled.
   */
  subclusters?: boolean;
  /** Set by the planner: qemu's free_cluster_index after the writes (a bitmap store at close goes on from it). */
  after?: { freeClusterIndex?: number };
}

/**
 * The steps that make `runs` (ascending, disjoint, cluster aligned) of the qcow2 image on `dev`
 * read as `source` says (zero runs as zeros). Throws PlanRefusal before anything is written.
 */
export function planInPlaceWrite(dev: BlockDevice, runs: readonly ClusterRun[], source: GuestSource, opts: InPlaceOptions): RepairStep[] {
  const h = parseHeader(dev);
  const subclusters = opts.subclusters === true && h.extendedL2 && !opts.unmap && !opts.compress;
  const why = inPlaceRefusal(h, opts.bitmapsOpened, subclusters);
  if (why) throw refuse(why);
  const cs = h.clusterSize;
  // Bytes per L2 entry, and the unit a write covers whole (a subcluster with extended L2 entries).
  const entrySize = h.extendedL2 ? 16 : 8;
  const unit = h.extendedL2 ? cs / 32 : cs;
  const perL2 = cs / entrySize;
  const virtualSize = Number(h.size);
  const refs = new RefcountModel(dev, h);
  const l1Offset = Number(h.l1TableOffset);
  if (h.l1Size > 0 && l1Offset + h.l1Size * 8 > dev.size) throw refuse('its L1 table reaches past the end of the file');
  const l1Bytes = h.l1Size > 0 ? readAt(dev, l1Offset, h.l1Size * 8) : Buffer.alloc(0);
  const l1Changed = new Set<number>();
  const l2 = new L2Tables(dev, cs);
  const data: DataWrite[] = [];
  let end = dev.size;
  const unmap = opts.unmap === true && h.version >= 3;
  if (opts.unmap && !unmap) throw refuse('it is a version 2 image, which has no zero clusters');

  const packer: BytePacker = { freeByte: 0 };
  const zstd = h.compressionType === 1;
  const sizeShift = BigInt(62 - (Math.log2(cs) - 8));
  /** The cluster compressed into packed bytes and its entry set; false when it does not shrink. */
  const compressed = (virt: number, guestBytes: number, table: Buffer, at: number, l2Offset: number): boolean => {
    const whole = Buffer.alloc(cs);
    source(whole.subarray(0, guestBytes), virt);
    const bytes = compressCluster(whole, zstd, cs - 1);
    if (!bytes) return false;
    const pos = allocBytes(refs, packer, bytes.length);
    end = Math.max(end, pos + bytes.length);
    data.push({ pos, virt, length: bytes.length, zero: false, packed: guestBytes });
    // The host offset and the count of 512-byte sectors the bytes touch, minus one; never COPIED.
    const sectors = Math.floor((pos + bytes.length - 1) / 512) - Math.floor(pos / 512);
    table.writeBigUInt64BE(COMPRESSED | (BigInt(sectors) << sizeShift) | BigInt(pos), at);
    l2.markDirty(l2Offset);
    return true;
  };
  /** Clusters a data write is planned for already (an earlier request allocated them). */
  const planned = new Set<number>();
  /** L2 tables shared with snapshots that were copied: each loses a reference once the L1 names the copy. */
  const sharedTables: number[] = [];
  /** Data clusters shared with snapshots that were replaced: each loses a reference once its table names the new one. */
  const sharedClusters: number[] = [];
  /**
   * Clusters of the current request waiting for one allocation: qemu's handle_alloc run. `from`:
   * where in its cluster the write starts (0 but with subclusters), `length` the bytes written.
   */
  let group: { virt: number; from: number; length: number; table: Buffer; at: number; l2Offset: number }[] = [];
  const allocateGroup = (zero: boolean): void => {
    if (group.length === 0) return;
    const first = allocClusters(refs, group.length * cs);
    // With subclusters qemu writes only the subclusters covered: the file ends where they do.
    end = Math.max(end, subclusters ? first + (group.length - 1) * cs + group[group.length - 1].from + group[group.length - 1].length : first + group.length * cs);
    group.forEach((g, i) => {
      data.push({ pos: first + i * cs + g.from, virt: g.virt + g.from, length: g.length, zero });
      g.table.writeBigUInt64BE(BigInt(first + i * cs) | COPIED, g.at);
      if (subclusters) g.table.writeBigUInt64BE(subclustersWritten(g.table.readBigUInt64BE(g.at + 8), g.from / unit, (g.from + g.length) / unit), g.at + 8);
      l2.markDirty(g.l2Offset);
    });
    group = [];
  };

  for (const run of runs) {
    if (run.offset % unit !== 0 || run.length % unit !== 0 || run.offset < 0 || run.offset + run.length > virtualSize + cs) throw refuse('a write is outside the disk');
    // v2 images have no zero flag: without a backing file qemu's zero write is a discard, which
    // leaves an unallocated cluster as it is but gets its L2 table first (get_cluster_table
    // allocates a missing one); with a backing file its zeros must be written.
    const zeroFlag = run.zero && h.version >= 3;
    let span = -1;
    const runEnd = run.offset + run.length;
    for (let next = run.offset; next < runEnd && next < virtualSize;) {
      // The part [from, until) of one cluster the run covers (the whole cluster without subclusters).
      const virt = next - (next % cs);
      const from = next - virt;
      const until = Math.min(cs, runEnd - virt);
      next = virt + until;
      const cluster = virt / cs;
      const l1Index = Math.floor(cluster / perL2);
      if (l1Index >= h.l1Size) throw refuse('its L1 table is too small for its size');
      // qemu allocates at most one L2 table's clusters at once.
      if (l1Index !== span) allocateGroup(run.zero);
      span = l1Index;
      const l1Entry = l1Bytes.readBigUInt64BE(l1Index * 8);
      let l2Offset = Number(l1Entry & OFFSET_MASK);
      const guestBytes = Math.min(cs, virtualSize - virt);
      let table: Buffer;
      if (l2Offset === 0) {
        l2Offset = allocClusters(refs, cs);
        end = Math.max(end, l2Offset + cs);
        table = l2.get(l2Offset, true);
        l1Bytes.writeBigUInt64BE(BigInt(l2Offset) | COPIED, l1Index * 8);
        l1Changed.add(l1Index);
      } else if (!(l1Entry & COPIED)) {
        // Shared with a snapshot: qemu's get_cluster_table copies it (l2_allocate, first-fit),
        // names the copy in the L1 table and drops one reference on the old table.
        if (l2Offset % cs !== 0 || l2Offset + cs > dev.size) throw refuse(`L1 entry ${l1Index} is not a cluster of the file`);
        if (refs.get(l2Offset / cs) < 2) throw refuse('an L2 table used once has no COPIED flag');
        const copy = allocClusters(refs, cs);
        end = Math.max(end, copy + cs);
        table = l2.get(copy, true);
        readAt(dev, l2Offset, cs).copy(table);
        sharedTables.push(l2Offset);
        l1Bytes.writeBigUInt64BE(BigInt(copy) | COPIED, l1Index * 8);
        l1Changed.add(l1Index);
        l2Offset = copy;
      } else {
        if (l2Offset % cs !== 0) throw refuse(`L1 entry ${l1Index} is not cluster aligned`);
        table = l2.get(l2Offset, false);
      }
      const at = (cluster % perL2) * entrySize;
      const entry = table.readBigUInt64BE(at);
      const host = Number(entry & OFFSET_MASK);
      if (entry & COMPRESSED) throw refuse('a cluster to overwrite is compressed');
      if (host % cs !== 0) throw refuse(`an L2 entry of the table at ${l2Offset} is not cluster aligned`);
      if (subclusters) {
        const bitmap = table.readBigUInt64BE(at + 8);
        if (invalidBitmap(bitmap, host !== 0)) throw refuse(`an L2 entry of the table at ${l2Offset} has an invalid subcluster bitmap`);
        if (host !== 0 && !(entry & COPIED)) throw refuse(refs.get(host / cs) < 2 ? 'a cluster used once has no COPIED flag' : 'a cluster to overwrite is shared with a snapshot');
        const units = Array.from({ length: (until - from) / unit }, (_, k) => (virt + from) / unit + k);
        if (run.zero) {
          // qcow2_subcluster_zeroize: a cluster covered whole (or up to the disk's end) gets all
          // zero bits, a part of one only its subclusters'; the entry itself is kept.
          allocateGroup(false);
          const whole = from === 0 && (until === cs || virt + until >= virtualSize);
          const zeroed = whole ? ALL_ZEROES : subclustersZeroed(bitmap, from / unit, until / unit);
          units.forEach((u) => planned.add(u));
          if (zeroed !== bitmap) {
            table.writeBigUInt64BE(zeroed, at + 8);
            l2.markDirty(l2Offset);
          }
        } else if (host === 0) {
          units.forEach((u) => planned.add(u));
          group.push({ virt, from, length: until - from, table, at, l2Offset });
        } else {
          // Written in place: the subclusters no earlier request of this plan wrote.
          allocateGroup(false);
          for (const u of units) {
            if (planned.has(u)) continue;
            planned.add(u);
            data.push({ pos: host + (u * unit - virt), virt: u * unit, length: unit, zero: false });
          }
          const written = subclustersWritten(bitmap, from / unit, until / unit);
          if (written !== bitmap) {
            table.writeBigUInt64BE(written, at + 8);
            l2.markDirty(l2Offset);
          }
        }
        continue;
      }
      if (host !== 0 && !(entry & COPIED) && !(unmap && zeroFlag)) {
        // Shared with a snapshot and written whole: a new cluster, allocated with the request's
        // others (handle_alloc); the old one loses the active disk's reference once the table
        // names the new one (link_l2). A partial cluster (qemu's copy-on-write), a zero write
        // that keeps it or a compressed write are not done.
        if (refs.get(host / cs) < 2) throw refuse('a cluster used once has no COPIED flag');
        if (run.zero || opts.compress || guestBytes < cs) throw refuse('a cluster to overwrite is shared with a snapshot');
        sharedClusters.push(host);
        planned.add(cluster);
        group.push({ virt, from: 0, length: guestBytes, table, at, l2Offset });
        continue;
      }
      // A zero write with unmap drops the reference either way (a snapshot keeps the cluster).
      if (host !== 0 && !(entry & COPIED) && refs.get(host / cs) < 2) throw refuse('a cluster used once has no COPIED flag');
      if (unmap && zeroFlag && host !== 0) {
        freeClusters(refs, host, cs);
        planned.add(cluster);
        table.writeBigUInt64BE(ZERO_FLAG, at);
        l2.markDirty(l2Offset);
        continue;
      }
      if (host === 0 && !zeroFlag && !(run.zero && !opts.hasBacking)) {
        if (opts.compress && !run.zero) {
          // One cluster at a time: compressed, or (not shrinking) allocated alone.
          allocateGroup(false);
          planned.add(cluster);
          if (compressed(virt, guestBytes, table, at, l2Offset)) continue;
          group.push({ virt, from: 0, length: guestBytes, table, at, l2Offset });
          allocateGroup(false);
          continue;
        }
        group.push({ virt, from: 0, length: guestBytes, table, at, l2Offset });
        continue;
      }
      allocateGroup(run.zero);
      let newEntry: bigint;
      if (host !== 0) {
        // Written in place (zeros for a zero run: the allocation is kept, as without unmap).
        if (host + cs > Number.MAX_SAFE_INTEGER) throw refuse('a cluster offset is too large');
        if (!planned.has(cluster)) data.push({ pos: host, virt, length: guestBytes, zero: run.zero });
        newEntry = BigInt(host) | COPIED;
      } else if (zeroFlag) {
        newEntry = ZERO_FLAG;
      } else {
        continue;
      }
      planned.add(cluster);
      if (newEntry === entry) continue;
      table.writeBigUInt64BE(newEntry, at);
      l2.markDirty(l2Offset);
    }
    allocateGroup(run.zero);
    for (let virt = run.offset; virt < runEnd; virt += unit) planned.add(virt / unit);
  }

  const steps: RepairStep[] = [];
  // New refcount blocks may lie past the end too.
  for (const b of refs.changedBlocks()) end = Math.max(end, b.offset + cs);
  end = Math.max(end, refs.end);
  if (end > dev.size) steps.push({ kind: 'truncate', size: end });
  // Data in the clusters of a refcount table a growth replaced waits for the switch to the new one.
  const retired = refs.retiredClusters();
  const late = (d: DataWrite) => retired.has(Math.floor(d.pos / cs));
  steps.push(...fillSteps(data.filter((d) => !late(d)), source, cs, zstd));
  steps.push({ kind: 'barrier' });
  steps.push(...refs.flush(), { kind: 'barrier' });
  for (const w of refs.tableWrites('hooked')) steps.push({ kind: 'write', ...w }, { kind: 'barrier' });
  if (data.some(late)) steps.push(...fillSteps(data.filter(late), source, cs, zstd), { kind: 'barrier' });
  steps.push(...l2.writes(true), { kind: 'barrier' });
  steps.push(...l2.writes(false), { kind: 'barrier' });
  for (const i of [...l1Changed].sort((a, b) => a - b)) {
    steps.push({ kind: 'write', pos: l1Offset + i * 8, bytes: l1Bytes.subarray(i * 8, i * 8 + 8) });
  }
  steps.push({ kind: 'barrier' });
  // Refcounts lowered after a grown refcount table's switch (the old table freed), and those of
  // the shared L2 tables the L1 table no longer names (lowered earlier, a crash would leave them
  // counted below their references; they stay referenced by a snapshot, so nothing is freed).
  for (const offset of [...sharedTables, ...sharedClusters]) freeClusters(refs, offset, cs);
  steps.push(...refs.flush(), { kind: 'barrier' });
  if (opts.after) opts.after.freeClusterIndex = refs.freeClusterIndex;
  return unmap ? underDirtyBit(h, refs, steps) : steps;
}

/** INCOMPAT.dirty set first and cleared last; the freed clusters that stay free read as zeros (qemu discards them). */
function underDirtyBit(h: Qcow2Header, refs: RefcountModel, steps: RepairStep[]): RepairStep[] {
  const bits = (dirty: boolean) => {
    const bytes = Buffer.alloc(8);
    bytes.writeBigUInt64BE(dirty ? h.incompatible | INCOMPAT.dirty : h.incompatible);
    return bytes;
  };
  const cs = h.clusterSize;
  const discarded = [...new Set(refs.freed)].filter((c) => refs.get(c) === 0).sort((a, b) => a - b);
  return [
    { kind: 'write', pos: INCOMPATIBLE_AT, bytes: bits(true) }, { kind: 'barrier' },
    ...steps,
    ...discarded.map((c): RepairStep => ({ kind: 'discard', pos: c * cs, length: cs })), { kind: 'barrier' },
    { kind: 'write', pos: INCOMPATIBLE_AT, bytes: bits(false) }, { kind: 'barrier' },
  ];
}

/** Data writes as 'fill' steps, adjacent ones (in file and disk) joined up to MAX_FILL. */
function fillSteps(data: DataWrite[], source: GuestSource, cs: number, zstd: boolean): RepairStep[] {
  const steps: RepairStep[] = [];
  let i = 0;
  while (i < data.length) {
    const first = data[i];
    if (first.packed !== undefined) {
      steps.push({ kind: 'fill', pos: first.pos, length: first.length, fill: (buf) => buf.set(recompressed(first, source, cs, zstd)) });
      i++;
      continue;
    }
    const zero = first.zero;
    let length = first.length;
    let j = i + 1;
    while (j < data.length && data[j].packed === undefined && data[j].pos === first.pos + length && data[j].virt === first.virt + length &&
      data[j].zero === zero && length + data[j].length <= MAX_FILL) {
      length += data[j].length;
      j++;
    }
    const virt = first.virt;
    steps.push({ kind: 'fill', pos: first.pos, length, fill: zero ? () => undefined : (buf) => source(buf, virt) });
    i = j;
  }
  return steps;
}

/**
 * A compressed cluster's bytes, compressed again when its step runs (the plan holds no data):
 * the same input gives the same bytes, checked against the length the plan allocated.
 */
function recompressed(d: DataWrite, source: GuestSource, cs: number, zstd: boolean): Uint8Array {
  const whole = Buffer.alloc(cs);
  source(whole.subarray(0, d.packed), d.virt);
  const bytes = compressCluster(whole, zstd, cs - 1);
  if (!bytes || bytes.length !== d.length) throw new ImageError('instar compressed a cluster differently on the second pass');
  return bytes;
}
