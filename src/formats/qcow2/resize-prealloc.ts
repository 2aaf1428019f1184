// qcow2 grow with --preallocation=metadata (qemu's preallocate_co): every cluster of the new area
// gets a data cluster in the file, without data. Per L2 table, as qemu's qcow2_alloc_host_offset
// goes: a missing L2 table is allocated first (first-fit, one cluster), then one contiguous run of
// data clusters first-fit; the entries point at them (COPIED); the file is extended to the last
// run's end. instar writes the outcome in a crash-safe order: the file length, the refcounts,
// the tables, the L1 entries that link new tables. Where the old or the new size is not whole
// clusters, qemu's copy-on-write writes the rest of that new cluster (zeros: no backing file
// reaches there) over whatever the reused cluster held; an allocated old last cluster is kept.
import { readAt } from '../bytes.ts';
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import type { Qcow2Header } from './header.ts';
import { RefcountRangeError, type RefcountModel } from './refcount-update.ts';
import { allocClusters } from './allocator.ts';

const OFFSET_MASK = 0x00fffffffffffe00n;
const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

/** The allocation state a grow leaves after its L1 table work. */
export interface GrowState {
  /** The refcounts, whose free-cluster hint is qemu's free_cluster_index. */
  refs: RefcountModel;
  /** The active L1 table (the new one when it grew), in memory. */
  l1: Buffer;
  l1Offset: number;
  /** The file's length as qemu's writes so far left it. */
  fileSize: number;
}

/**
 * qcow2_alloc_clusters: the first run of `count` free clusters, referenced once (a missing
 * refcount block, or a full refcount table, is made as qemu makes it); undefined when a refcount
 * would leave its range.
 */
export function allocateClusters(state: GrowState, count: number): number | undefined {
  try {
    return allocClusters(state.refs, count * state.refs.clusterSize) / state.refs.clusterSize;
  } catch (e) {
    if (e instanceof RefcountRangeError) return undefined;
    throw e;
  }
}

/**
 * An L2 table as a grow leaves it: read from the file, or new and linked into the L1 (all zeros,
 * or a copy of the table at `replaces`, which a snapshot shares).
 */
export interface GrowTable {
  offset: number;
  bytes: Buffer;
  created: boolean;
  replaces?: number;
}

/**
 * The L2 table of `l1Index` as qemu's get_cluster_table gives it: a missing one is allocated
 * (first-fit, one cluster, written at once). A string says why instar will not.
 */
export function growTable(dev: BlockDevice, h: Qcow2Header, state: GrowState, tables: Map<number, GrowTable>, l1Index: number): GrowTable | string {
  const known = tables.get(l1Index);
  if (known) return known;
  const cs = h.clusterSize;
  const entry = state.l1.readBigUInt64BE(l1Index * 8);
  let table: GrowTable;
  if ((entry & OFFSET_MASK) === 0n) {
    const cluster = allocateClusters(state, 1);
    if (cluster === undefined) return 'a refcount of a new L2 table is out of range';
    table = { offset: cluster * cs, bytes: Buffer.alloc(cs), created: true };
    state.l1.writeBigUInt64BE(BigInt(table.offset) | COPIED, l1Index * 8);
    state.fileSize = Math.max(state.fileSize, table.offset + cs);
  } else {
    const offset = entry & OFFSET_MASK;
    if (offset % BigInt(cs) !== 0n || offset >= BigInt(dev.size)) return 'an L2 table is misplaced';
    if (!(entry & COPIED)) {
      // Shared (a snapshot's): l2_allocate copies it to a new cluster (first-fit) and the old
      // one loses the active disk's reference, which leaves it counted (refcount 2 or more).
      if (state.refs.get(Number(offset) / cs) < 2) return 'a shared L2 table has a refcount below 2';
      const cluster = allocateClusters(state, 1);
      if (cluster === undefined) return 'a refcount of a copied L2 table is out of range';
      table = { offset: cluster * cs, bytes: readAt(dev, offset, cs), created: true, replaces: Number(offset) };
      state.l1.writeBigUInt64BE(BigInt(table.offset) | COPIED, l1Index * 8);
      state.fileSize = Math.max(state.fileSize, table.offset + cs);
    } else {
      table = { offset: Number(offset), bytes: readAt(dev, offset, cs), created: false };
    }
  }
  tables.set(l1Index, table);
  return table;
}

/**
 * The writes for what a grow allocated, in a crash-safe order: the file's new length, the
 * refcounts (new refcount blocks hooked up, a grown refcount table switched to), data into new
 * clusters, the tables, then the L1 entries that link new tables (leaks at most in between).
 */
export function growSteps(state: GrowState, tables: Map<number, GrowTable>, sizeBefore: number, finalSize: number, data: RepairStep[] = [], opts: { firstTableAlone?: boolean } = {}): RepairStep[] {
  const steps: RepairStep[] = [];
  finalSize = Math.max(finalSize, state.refs.end);
  if (finalSize > sizeBefore) steps.push({ kind: 'truncate', size: finalSize }, { kind: 'barrier' });
  state.fileSize = Math.max(state.fileSize, finalSize);
  steps.push(...state.refs.flush(), { kind: 'barrier' });
  for (const w of state.refs.tableWrites('hooked')) steps.push({ kind: 'write', pos: w.pos, bytes: w.bytes }, { kind: 'barrier' });
  // Data written into new clusters, before any table points at them.
  if (data.length > 0) steps.push(...data, { kind: 'barrier' });
  // firstTableAlone: the first table stops naming a cluster another new table reuses.
  for (const [i, t] of [...tables.values()].entries()) {
    steps.push({ kind: 'write', pos: t.offset, bytes: t.bytes });
    if (i === 0 && opts.firstTableAlone) steps.push({ kind: 'barrier' });
  }
  steps.push({ kind: 'barrier' });
  for (const [l1Index, t] of tables) {
    if (!t.created) continue;
    const entry = Buffer.alloc(8);
    entry.writeBigUInt64BE(BigInt(t.offset) | COPIED);
    steps.push({ kind: 'write', pos: state.l1Offset + l1Index * 8, bytes: entry });
  }
  steps.push({ kind: 'barrier' });
  // Copied shared tables lose the active disk's reference once the L1 names their copies.
  const replaced = [...tables.values()].filter((t) => t.replaces !== undefined);
  for (const t of replaced) state.refs.update(t.replaces!, state.refs.clusterSize, 1, true, { discard: false });
  if (replaced.length > 0) steps.push(...state.refs.flush(), { kind: 'barrier' });
  return steps;
}

/**
 * The part of [pos, to) in one L2 table (of `entrySize`-byte entries: 16 with extended L2): its
 * L1 index, where the part ends, its first entry and its clusters.
 */
export function l2Range(pos: number, to: number, clusterSize: number, entrySize: number): { l1Index: number; end: number; first: number; count: number } {
  const l2Span = (clusterSize / entrySize) * clusterSize;
  const l1Index = Math.floor(pos / l2Span);
  const end = Math.min(to, (l1Index + 1) * l2Span);
  return { l1Index, end, first: (pos % l2Span) / clusterSize, count: Math.ceil((end - pos) / clusterSize) };
}

/** Whether the `length` bytes at `at` are all zero (an L2 entry, with its bitmap when extended). */
export const isZero = (b: Buffer, at: number, length: number): boolean => b.subarray(at, at + length).every((v) => v === 0);

/**
 * The copy-on-write qemu's link_l2 makes of a newly allocated cluster that the request covers only
 * partly: the (sub)cluster's bytes before the request and after it, read from the guest disk
 * (zeros here: no backing file reaches them) and written, whatever the reused cluster held.
 */
function cowWrites(host: number, inClusterFrom: number, inClusterTo: number, unit: number, head?: (at: number, length: number) => Uint8Array): RepairStep[] {
  const writes: RepairStep[] = [];
  const headStart = Math.floor(inClusterFrom / unit) * unit;
  const length = inClusterFrom - headStart;
  if (length > 0) writes.push({ kind: 'write', pos: host + headStart, bytes: head ? head(headStart, length) : new Uint8Array(length) });
  const tailEnd = Math.ceil(inClusterTo / unit) * unit;
  if (tailEnd > inClusterTo) writes.push({ kind: 'write', pos: host + inClusterTo, bytes: new Uint8Array(tailEnd - inClusterTo) });
  return writes;
}

/** The steps, or why instar will not preallocate; `readGuest` reads the disk before the change. */
export function preallocateMetadata(dev: BlockDevice, h: Qcow2Header, state: GrowState, from: number, to: number, backingSize = 0, readGuest?: (buf: Uint8Array, offset: number) => void): RepairStep[] | string {
  const cs = h.clusterSize;
  // Extended L2 entries: 16 bytes, whose subcluster bitmap preallocation leaves as it is (0).
  const es = h.extendedL2 ? 16 : 8;
  const unit = h.extendedL2 ? cs / 32 : cs;
  const oldLength = from;
  const partial = from % cs !== 0;
  from = Math.floor(from / cs) * cs;
  // The copy-on-write after a new end inside a (sub)cluster reads the guest disk past that end:
  // the backing file's bytes where it reaches there (written into the file), not done.
  if (to % unit !== 0 && backingSize > to) return 'preallocation to a size that is not whole clusters under a longer backing file is not implemented';
  // The copy-on-write of the old partial cluster reads the guest disk there (the backing file too).
  if (partial && !readGuest && backingSize > Math.floor(oldLength / unit) * unit) return 'preallocation from a partial cluster over a backing file is not implemented';
  const guestHead = readGuest && ((at: number, length: number) => {
    const bytes = new Uint8Array(length);
    readGuest(bytes, from + at);
    return bytes;
  });
  /** Shared old last clusters the new ones replace: a reference dropped after the tables. */
  const replaced: number[] = [];
  const cow: RepairStep[] = [];
  const sizeBefore = state.fileSize;
  const tables = new Map<number, GrowTable>();
  let dataEnd = 0;
  for (let pos = from; pos < to;) {
    const range = l2Range(pos, to, cs, es);
    const tableEnd = range.end;
    const table = growTable(dev, h, state, tables, range.l1Index);
    if (typeof table === 'string') return table;
    let { first, count } = range;
    if (partial && pos === from) {
      // The old last cluster, partly in the disk: qemu keeps it when it is allocated and used
      // once (handle_copied), and allocates it like the others when it is not allocated, a
      // zero cluster or shared with a snapshot (its guest bytes copied, its entry replaced).
      const entry = table.bytes.readBigUInt64BE(first * es);
      const host = entry & OFFSET_MASK;
      if (entry & COPIED && !(entry & COMPRESSED) && !(entry & 1n) && host !== 0n) {
        first++;
        count--;
      } else if (entry !== 0n) {
        if (h.extendedL2 || entry & COMPRESSED || !readGuest) return 'preallocation from a partial cluster qemu would copy is not implemented';
        if (host !== 0n) {
          // Shared: link_l2 drops the active disk's reference, which must leave it counted.
          if (entry & 1n || state.refs.get(Number(host) / cs) < 2) return 'preallocation from a partial cluster qemu would free is not implemented';
          replaced.push(Number(host));
        }
        table.bytes.fill(0, first * es, first * es + es);
      }
    }
    for (let i = first; i < first + count; i++) {
      if (!isZero(table.bytes, i * es, es)) return 'the new area already has L2 entries';
    }
    if (count === 0) {
      pos = tableEnd;
      continue;
    }
    const run = allocateClusters(state, count);
    if (run === undefined) return 'a refcount of the preallocated clusters is out of range';
    for (let i = 0; i < count; i++) table.bytes.writeBigUInt64BE(BigInt((run + i) * cs) | COPIED, (first + i) * es);
    // The run's first and last clusters may lie partly outside [oldLength, to): qemu copies the rest.
    const firstGuest = pos + (range.count - count) * cs;
    const lastGuest = firstGuest + (count - 1) * cs;
    cow.push(...cowWrites(run * cs, Math.max(oldLength, firstGuest) - firstGuest, Math.min(to, firstGuest + cs) - firstGuest, unit, firstGuest === from ? guestHead : undefined));
    if (count > 1) cow.push(...cowWrites((run + count - 1) * cs, 0, Math.min(to, lastGuest + cs) - lastGuest, unit));
    // qemu extends the file to its last request's end, rounded up to a (sub)cluster.
    const runStart = pos + (range.count - count) * cs;
    dataEnd = run * cs + Math.ceil((tableEnd - runStart) / unit) * unit;
    pos = tableEnd;
  }
  // qemu extends the file to the last run's end (the L2 tables it wrote may have done so already).
  const steps = growSteps(state, tables, sizeBefore, Math.max(state.fileSize, dataEnd), cow);
  // The caller's last refcount flush writes these, after the tables.
  for (const host of replaced) state.refs.update(host, cs, 1, true, { discard: false });
  return steps;
}
