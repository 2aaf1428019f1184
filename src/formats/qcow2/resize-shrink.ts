// qcow2 shrink (qemu's qcow2_co_truncate with --shrink), pure: what qemu's writes leave behind.
// qemu discards every cluster from the new end (rounded up to a cluster) to the old one (full
// discard: L2 entries become 0, data clusters lose a reference and, freed, are punched out of
// the file), drops the L2 tables past the new L1 size (their L1 entries zeroed, the tables freed
// and punched), drops refcount blocks left unused, cuts the file after its last used cluster and
// writes the new size. instar frees the same clusters (discard steps: the host punches them after
// the op), and orders the writes so that a crash anywhere leaves leaks at most: tables first, then
// refcounts, then the freed clusters' contents, the file length, the size.
import type { BlockDevice, ResizePlan } from '../types.ts';
import { readAt } from '../bytes.ts';
import type { RepairStep } from '../repair.ts';
import { INCOMPAT, l1EntriesFor, type Qcow2Header } from './header.ts';
import { RefcountModel } from './refcount-update.ts';
import { compressedSpan } from './l2-entry.ts';

/** Most refcount-block bytes one resize holds in memory. */
export const MAX_REFCOUNT_BYTES = 64 * 1024 * 1024;

/** L1E_OFFSET_MASK and L2E_OFFSET_MASK: bits 9-55. */
const OFFSET_MASK = 0x00fffffffffffe00n;
const COMPRESSED = 1n << 62n;
const COPIED = 1n << 63n;

interface Helpers {
  sizeWrite(size: number): RepairStep;
  refused(why: string): ResizePlan;
}

/** A table offset from an L1 entry or L2 entry, checked to be a cluster inside the file. */
function clusterOf(dev: BlockDevice, h: Qcow2Header, offset: bigint): number | undefined {
  if (offset % BigInt(h.clusterSize) !== 0n || offset >= BigInt(dev.size)) return undefined;
  return Number(offset) / h.clusterSize;
}

export function planShrink(dev: BlockDevice, h: Qcow2Header, newSize: number, helpers: Helpers): ResizePlan {
  const cs = h.clusterSize;
  const oldLength = Number(h.size / 512n) * 512;
  const entrySize = h.extendedL2 ? 16 : 8;
  const l2Span = (cs / entrySize) * cs;
  const refs = new RefcountModel(dev, h, { maxBlockBytes: MAX_REFCOUNT_BYTES });
  const dataFile = (h.incompatible & INCOMPAT.dataFile) !== 0n;
  const l1 = readAt(dev, h.l1TableOffset, h.l1Size * 8);
  const newL1 = Number(l1EntriesFor(h, BigInt(newSize)));
  const emptied: RepairStep[] = [];
  const linked: RepairStep[] = [];
  /** Clusters whose refcount dropped to 0, punched by qemu (unless allocated again). */
  const freed = new Set<number>();
  /** Of those, the L2 tables qemu frees one by one (the data clusters go in one merged discard). */
  const tables = new Set<number>();
  /** New L2 tables: [cluster, L1 index]. */
  const created: [number, number][] = [];
  // The model's free-cluster hint is qemu's free_cluster_index: first-fit from 0 after open,
  // lowered by every cluster freed.
  let fileSize = dev.size;
  const release = (cluster: number): boolean => {
    if (!refs.tryAdd(cluster, -1)) return false;
    if (refs.get(cluster) === 0) freed.add(cluster);
    return true;
  };
  const allocate = (): number | undefined => {
    const cluster = refs.findFree(1);
    if (!refs.covered(cluster) || !refs.tryAdd(cluster, 1)) return undefined;
    freed.delete(cluster);
    fileSize = Math.max(fileSize, (cluster + 1) * cs);
    return cluster;
  };

  /** L2 tables copied from shared ones (qemu's COW before a discard): cluster → contents. */
  const copied = new Map<number, Buffer>();
  /**
   * discard_in_l2_slice with full discard: the entries of [pos, end) zeroed, their data clusters
   * released; returns `end`, or -1 for a bad one.
   */
  const discardEntries = (table: Buffer, pos: number, end: number): number => {
    for (; pos < end; pos += cs) {
      const at = ((pos % l2Span) / cs) * entrySize;
      const entry = table.readBigUInt64BE(at);
      const bitmap = h.extendedL2 ? table.readBigUInt64BE(at + 8) : 0n;
      if (entry === 0n && bitmap === 0n) continue;
      table.fill(0, at, at + entrySize);
      // With an external data file the data clusters live there, uncounted: the entry goes alone
      // (qemu's discard of the data file's range does nothing without discard=unmap).
      if (dataFile && !(entry & COMPRESSED)) continue;
      if (entry & COMPRESSED) {
        if (dataFile) return -1;
        // qemu frees the 512-byte sectors the compressed bytes occupy: one reference off every
        // cluster they touch (several compressed clusters may share one).
        const span = compressedSpan(Number(entry >> 32n), Number(entry & 0xffffffffn), h.clusterBits);
        // (The last sector may end past the file: qemu writes compressed bytes, not sectors.)
        const end = span.hostOffset + span.length;
        for (let c = Math.floor(span.hostOffset / cs); c * cs < end; c++) if (!release(c)) return -1;
        continue;
      }
      const host = entry & OFFSET_MASK;
      if (host === 0n) continue;
      const cluster = clusterOf(dev, h, host);
      if (cluster === undefined || !release(cluster)) return -1;
    }
    return end;
  };

  // qcow2_cluster_discard over [round_up(new size), old size), one L2 table at a time.
  const start = Math.ceil(newSize / cs) * cs;
  for (let pos = start; pos < oldLength;) {
    const l1Index = Math.floor(pos / l2Span);
    const tableEnd = Math.min(oldLength, (l1Index + 1) * l2Span);
    const l1Entry = l1.readBigUInt64BE(l1Index * 8);
    const l2Offset = l1Entry & OFFSET_MASK;
    if (l2Offset === 0n) {
      const cluster = allocate();
      if (cluster === undefined) return helpers.refused('qemu would allocate an L2 table that needs a new refcount block');
      created.push([cluster, l1Index]);
      l1.writeBigUInt64BE(BigInt(cluster * cs) | COPIED, l1Index * 8);
      pos = tableEnd;
      continue;
    }
    if (clusterOf(dev, h, l2Offset) === undefined) return helpers.refused('an L2 table is misplaced');
    if (!(l1Entry & COPIED)) {
      if (h.nbSnapshots === 0) return helpers.refused('an L2 table is shared: qemu would copy it');
      // Shared with a snapshot: qemu's get_cluster_table copies it first (l2_allocate, first-fit),
      // the copy is linked, the old table loses the active disk's reference.
      const copy = allocate();
      if (copy === undefined) return helpers.refused('qemu would copy an L2 table where a new refcount block is needed');
      if (!release(Number(l2Offset) / cs)) return helpers.refused('a shared L2 table has a bad refcount');
      const table = readAt(dev, l2Offset, cs);
      copied.set(copy, table);
      created.push([copy, l1Index]);
      l1.writeBigUInt64BE(BigInt(copy * cs) | COPIED, l1Index * 8);
      pos = discardEntries(table, pos, tableEnd);
      if (pos < 0) return helpers.refused('a data cluster past its new end has a bad offset or refcount');
      continue;
    }
    const table = readAt(dev, l2Offset, cs);
    const before = Buffer.from(table);
    pos = discardEntries(table, pos, tableEnd);
    if (pos < 0) return helpers.refused('a data cluster past its new end has a bad offset or refcount');
    // A table past the new L1 size is freed below: qemu drops its cached changes.
    if (!before.equals(table) && l1Index < newL1) emptied.push({ kind: 'write', pos: Number(l2Offset), bytes: table });
  }

  // qcow2_shrink_l1_table: the entries past the new L1 size zeroed, their tables freed (last first).
  if (newL1 < h.l1Size) {
    emptied.push({ kind: 'zero', pos: Number(h.l1TableOffset) + newL1 * 8, length: (h.l1Size - newL1) * 8 });
    for (let i = h.l1Size - 1; i >= newL1; i--) {
      const l2Offset = l1.readBigUInt64BE(i * 8) & OFFSET_MASK;
      if (l2Offset === 0n) continue;
      const cluster = Number(l2Offset) / cs;
      if (!Number.isInteger(cluster) || !release(cluster)) return helpers.refused('an L2 table past its new end has a bad offset or refcount');
      tables.add(cluster);
    }
  }
  for (const [cluster, l1Index] of created) {
    if (l1Index >= newL1) continue;
    const entry = Buffer.alloc(8);
    entry.writeBigUInt64BE(BigInt(cluster * cs) | COPIED);
    if ((cluster + 1) * cs > dev.size) linked.push({ kind: 'truncate', size: (cluster + 1) * cs });
    const contents = copied.get(cluster);
    linked.push(contents ? { kind: 'write', pos: cluster * cs, bytes: contents } : { kind: 'zero', pos: cluster * cs, length: cs }, { kind: 'barrier' });
    linked.push({ kind: 'write', pos: Number(h.l1TableOffset) + l1Index * 8, bytes: entry });
  }

  // qcow2_shrink_reftable would drop refcount blocks that count nothing any more.
  for (let i = 0; i < refs.tableSize; i++) {
    if (refs.unusedBlock(i)) return helpers.refused('qemu would drop one of its refcount blocks');
  }

  // qcow2_get_last_cluster: the file ends after the last cluster with a reference.
  let last = Math.ceil(fileSize / cs) - 1;
  while (last >= 0 && refs.get(last) === 0) last--;
  if (last < 0) return helpers.refused('no cluster has a reference');
  const fileEnd = Math.min(fileSize, (last + 1) * cs);

  const steps: RepairStep[] = [...emptied, { kind: 'barrier' }, ...refs.flush(), { kind: 'barrier' }, ...linked, { kind: 'barrier' }];
  for (const cluster of [...freed].sort((a, b) => a - b)) {
    const pos = cluster * cs;
    // Zeros past the file's end are what it reads there already.
    if (pos < Math.min(fileEnd, dev.size)) steps.push({ kind: 'discard', pos, length: Math.min(cs, fileEnd - pos), ...(tables.has(cluster) ? { unit: cs } : {}) });
  }
  steps.push({ kind: 'barrier' });
  if (fileEnd !== dev.size) steps.push({ kind: 'truncate', size: fileEnd }, { kind: 'barrier' });
  steps.push(helpers.sizeWrite(newSize), { kind: 'barrier' });
  return { steps };
}
