// qemu's qcow2_make_empty when make_completely_empty cannot run (persistent bitmaps, whose
// clusters must stay; a version 2 image, which has no dirty bit): every L2 entry of the active
// disk is discarded in full (qcow2_cluster_discard with full_discard: the entry becomes 0 and
// reads through to the backing file, its cluster's refcount drops, a cluster freed is
// discarded). L2 tables stay allocated, and where the L1 table has none qemu's get_cluster_table
// allocates an empty one. The driver discards below the block layer: dirty bitmaps record nothing.
//
// Crash order, as qemu's caches make it (refcount blocks depend on L2 tables): the L2 tables
// first (a crash leaves clusters counted but unused: leaks), then the new L2 tables with the
// refcount blocks, then the L1 entries naming the new tables, then the discards of freed clusters.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { readAt } from '../bytes.ts';
import { CRYPT, INCOMPAT, parseHeader, type Qcow2Header } from './header.ts';
import { readHeaderModel } from './header-model.ts';
import { readDirectory, TABLE_ENTRY_OFFSET } from './bitmap-dir.ts';
import { readTable } from './bitmap-state.ts';
import { allocClusters, freeClusters } from './allocator.ts';
import { compressedSpan, hostOffsetOf, unitTypeOf } from './l2-entry.ts';
import { PlanRefusal, RefcountModel } from './refcount-update.ts';
import { readRefcount, writeRefcount } from './refcount-entry.ts';

const L1E_OFFSET_MASK = 0x00fffffffffffe00n;
const COPIED = 1n << 63n;
/** Most bytes of changed L2 tables one plan holds. */
const MAX_L2_BYTES = 256 * 1024 * 1024;

/** Why instar will not empty this image by discarding (undefined: it will). */
export function discardAllRefusal(dev: BlockDevice): string | undefined {
  const h = parseHeader(dev);
  if (h.cryptMethod !== CRYPT.none) return 'it is encrypted';
  if (h.incompatible & INCOMPAT.dataFile) return 'it has an external data file';
  if (h.incompatible & (INCOMPAT.dirty | INCOMPAT.corrupt)) return 'it is dirty or corrupt';
  return undefined;
}

/** The writes of qemu's discard of the whole disk; call discardAllRefusal first. */
export function planDiscardAll(dev: BlockDevice): RepairStep[] {
  const h = parseHeader(dev);
  const cs = h.clusterSize;
  // Extended L2 entries: 8 bytes of entry, then 8 of subcluster bitmap.
  const extended = (h.incompatible & INCOMPAT.extendedL2) !== 0n;
  const entryBytes = extended ? 16 : 8;
  const perL2 = cs / entryBytes;
  const refs = new RefcountModel(dev, h);
  const clusters = Math.ceil(Number(h.size / 512n) * 512 / cs);
  const l1 = readAt(dev, h.l1TableOffset, h.l1Size * 8);
  const metadata = metadataClusters(dev, h, l1);
  /** qemu's free, refused where a data cluster is also metadata (qemu marks the image corrupt later). */
  const free = (offset: number, length: number): void => {
    for (let c = Math.floor(offset / cs); c * cs < offset + length; c++) {
      if (metadata.has(c)) throw new PlanRefusal('instar refuses this qcow2 image: a data cluster is also its metadata; nothing was written');
    }
    freeClusters(refs, offset, length);
  };
  /**
   * Sets the table's entries (of L1 index i) to 0, freeing their clusters; whether any was set.
   * An extended entry's bitmap is cleared with it (an unallocated entry whose bitmap marks zero
   * subclusters is not skipped: it would not read through to the backing file).
   */
  const discardEntries = (table: Buffer, i: number): boolean => {
    let changed = false;
    for (let j = 0; j < perL2 && i * perL2 + j < clusters; j++) {
      const at = j * entryBytes;
      const hi = table.readUInt32BE(at);
      const lo = table.readUInt32BE(at + 4);
      if (hi === 0 && lo === 0 && (!extended || table.readBigUInt64BE(at + 8) === 0n)) continue;
      table.fill(0, at, at + entryBytes);
      changed = true;
      const type = unitTypeOf(hi, lo, 0, 0, 0, false, false);
      if (type === 'compressed') {
        // qemu frees the 512-byte sectors the compressed bytes occupy.
        const span = compressedSpan(hi, lo, h.clusterBits);
        const start = span.hostOffset - (span.hostOffset % 512);
        free(start, span.length + (span.hostOffset - start));
      } else if (type === 'normal' || type === 'zero-alloc') {
        free(hostOffsetOf(hi, lo), cs);
      }
    }
    return changed;
  };
  const tables: RepairStep[] = [];
  /** L2 tables qemu allocates on the way (get_cluster_table), and the L1 entries naming them. */
  const created: RepairStep[] = [];
  const l1Sectors = new Set<number>();
  let held = 0;
  for (let i = 0; i < h.l1Size && i * perL2 < clusters; i++) {
    const l1Entry = l1.readBigUInt64BE(i * 8);
    const l2Offset = Number(l1Entry & L1E_OFFSET_MASK);
    if (l2Offset !== 0 && !(l1Entry & COPIED)) {
      // Shared with a snapshot: qemu's get_cluster_table copies it to a new cluster, names the
      // copy in the L1 table and drops its reference on the old one; the copy is then discarded.
      if (l2Offset % cs !== 0 || l2Offset + cs > dev.size) throw new PlanRefusal('instar refuses this qcow2 image: an L2 table is outside the file; nothing was written');
      if (refs.get(l2Offset / cs) < 2) throw new PlanRefusal('instar refuses this qcow2 image: an L2 table used once has no COPIED flag; nothing was written');
      const at = allocClusters(refs, cs);
      if (refs.switchPending) throw new PlanRefusal('instar refuses this qcow2 image: emptying it grows its refcount table; nothing was written');
      metadata.add(at / cs);
      l1.writeBigUInt64BE(BigInt(at) | COPIED, i * 8);
      l1Sectors.add(Math.floor((i * 8) / 512));
      freeClusters(refs, l2Offset, cs);
      const copy = readAt(dev, l2Offset, cs);
      discardEntries(copy, i);
      created.push({ kind: 'write', pos: at, bytes: copy });
      held += cs;
      continue;
    }
    if (l2Offset === 0) {
      // qemu's discard gets a writable L2 table for every part of the disk: an empty one is
      // allocated (first fit, over clusters freed just before) and hooked into the L1 table.
      const at = allocClusters(refs, cs);
      if (refs.switchPending) throw new PlanRefusal('instar refuses this qcow2 image: emptying it grows its refcount table; nothing was written');
      created.push({ kind: 'write', pos: at, bytes: Buffer.alloc(cs) });
      metadata.add(at / cs);
      l1.writeBigUInt64BE(BigInt(at) | COPIED, i * 8);
      l1Sectors.add(Math.floor((i * 8) / 512));
      held += cs;
      continue;
    }
    if (l2Offset % cs !== 0 || l2Offset + cs > dev.size) throw new PlanRefusal('instar refuses this qcow2 image: an L2 table is outside the file; nothing was written');
    const table = readAt(dev, l2Offset, cs);
    const changed = discardEntries(table, i);
    if (!changed) continue;
    held += cs;
    if (held > MAX_L2_BYTES) throw new PlanRefusal('instar refuses this qcow2 image: emptying it touches too many L2 tables; nothing was written');
    tables.push({ kind: 'write', pos: l2Offset, bytes: table });
  }
  const freed = [...new Set(refs.freed)].filter((c) => refs.get(c) === 0).sort((a, b) => a - b);
  // qemu writes each new table and its L1 entry (the entry's 512-byte sector) as it allocates it;
  // here the new tables (some over data clusters the cleared entries freed) come after those
  // entries are cleared, and the L1 entries last, after the refcounts that count the tables.
  const hooks = refs.tableWrites('hooked').map((w): RepairStep => ({ kind: 'write', pos: w.pos, bytes: w.bytes }));
  const l1At = Number(h.l1TableOffset);
  const l1Writes = [...l1Sectors].sort((a, b) => a - b).map((k): RepairStep => ({ kind: 'write', pos: l1At + k * 512, bytes: l1.subarray(k * 512, Math.min(k * 512 + 512, l1.length)) }));
  const counts = refs.flush();
  // Refcounts raised before the L1 entries switch (new tables counted), lowered after (an old
  // table shared with a snapshot, and its data clusters, are still named until then).
  const raised = counts.map((w) => (w.kind === 'write' ? { ...w, bytes: raisedBlock(dev, w.pos, Buffer.from(w.bytes), 2 ** h.refcountOrder) } : w));
  const lowered = counts.filter((w, k) => w.kind === 'write' && raised[k].kind === 'write' && !Buffer.from(w.bytes).equals(Buffer.from((raised[k] as { bytes: Uint8Array }).bytes)));
  // New tables and refcount blocks past the end: the file grows first (zeros, nothing names them).
  const end = [...created, ...counts, ...hooks].reduce((e, w) => (w.kind === 'write' ? Math.max(e, w.pos + w.bytes.length) : e), dev.size);
  return [
    ...tables, { kind: 'barrier' },
    ...(end > dev.size ? [{ kind: 'truncate', size: end } as RepairStep] : []),
    ...created, ...raised, { kind: 'barrier' },
    ...(hooks.length ? [...hooks, { kind: 'barrier' } as RepairStep] : []),
    ...(l1Writes.length ? [...l1Writes, { kind: 'barrier' } as RepairStep] : []),
    ...(lowered.length ? [...lowered, { kind: 'barrier' } as RepairStep] : []),
    ...freed.filter((c) => c * cs < dev.size).map((c): RepairStep => ({ kind: 'discard', pos: c * cs, length: Math.min(cs, dev.size - c * cs), unit: cs })), { kind: 'barrier' },
  ];
}

/** A refcount block with each entry at the larger of the file's value and `final`'s. */
function raisedBlock(dev: BlockDevice, pos: number, final: Buffer, bits: number): Buffer {
  const disk = Buffer.alloc(final.length);
  if (pos < dev.size) dev.read(disk.subarray(0, Math.min(final.length, dev.size - pos)), pos);
  for (let i = 0; i < (final.length * 8) / bits; i++) {
    const old = readRefcount(disk, i, bits);
    if (old > readRefcount(final, i, bits)) writeRefcount(final, i, bits, old);
  }
  return final;
}

/** The clusters of the header, L1 and refcount tables, refcount blocks, L2 tables and bitmaps. */
function metadataClusters(dev: BlockDevice, h: Qcow2Header, l1: Buffer): Set<number> {
  const cs = h.clusterSize;
  const set = new Set<number>([0]);
  const span = (offset: bigint | number, length: number): void => {
    const first = Math.floor(Number(offset) / cs);
    for (let c = first; c * cs < Number(offset) + length; c++) set.add(c);
  };
  span(h.l1TableOffset, h.l1Size * 8);
  span(h.refcountTableOffset, h.refcountTableClusters * cs);
  const reftable = readAt(dev, h.refcountTableOffset, h.refcountTableClusters * cs);
  for (let at = 0; at < reftable.length; at += 8) span(reftable.readBigUInt64BE(at) & L1E_OFFSET_MASK, 1);
  // Empty entries name cluster 0, the header's, which is in the set anyway.
  for (let at = 0; at < l1.length; at += 8) span(l1.readBigUInt64BE(at) & L1E_OFFSET_MASK, 1);
  const ext = readHeaderModel(dev, h).bitmaps;
  // The driver checked the directory and the tables at open (bitmap-guard.ts at the session's).
  for (const bm of ext ? readDirectory(dev, ext) : []) {
    span(bm.tableOffset, bm.tableSize * 8);
    for (const entry of readTable(dev, bm.tableOffset, bm.tableSize, cs) ?? []) if (entry & TABLE_ENTRY_OFFSET) span(entry & TABLE_ENTRY_OFFSET, 1);
  }
  if (ext) span(ext.directoryOffset, Number(ext.directorySize));
  return set;
}
