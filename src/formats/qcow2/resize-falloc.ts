// qcow2 grow with --preallocation=falloc|full (qemu's qcow2_co_truncate): the data clusters of the
// new area are placed in one run at the end of the file, after a refcount area (refcount blocks and
// a new refcount table, exact size) made from the end of the last cluster in use, that covers them
// and one L2 table per L2 range they span plus one; then the file is extended over the run, and the
// L2 tables are linked as qcow2_alloc_cluster_link_l2 does (a missing table first-fit, where the
// freed old refcount table is the first candidate). From a size inside a cluster, that old last
// cluster is one of the new ones: its guest bytes are copied to the start of its new cluster
// (link_l2's copy-on-write), its entry replaced (an extended entry keeps its subcluster bitmap:
// qemu's preallocation leaves it), and the old host cluster's reference dropped once the table no
// longer points at it (qemu frees it without a discard). full writes the run's zeros; falloc would
// have the file system reserve them, which the sandboxed guest cannot ask for: instar extends the
// file (the same bytes, read as zeros, not reserved).
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import type { Qcow2Header } from './header.ts';
import { growSteps, growTable, isZero, l2Range, type GrowState, type GrowTable } from './resize-prealloc.ts';
import type { GuestReader } from './resize-zero.ts';
import { compressedSpan } from './l2-entry.ts';

const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;
const OFFSET_MASK = 0x00fffffffffffe00n;
/** An extended entry's bitmap with all 32 subclusters allocated. */
const ALL_ALLOCATED = 0xffffffffn;

/**
 * The steps, or why instar will not preallocate. `overBacking`: a backing file reaches past the
 * old end (qemu then marks every subcluster of the new clusters allocated: measured, 7.2 and 10.0).
 */
export function preallocateData(dev: BlockDevice, h: Qcow2Header, state: GrowState, oldLength: number, to: number, mode: 'falloc' | 'full', readGuest?: GuestReader, overBacking = false): RepairStep[] | string {
  const cs = h.clusterSize;
  // start_of_cluster(old_length): a partial old last cluster is allocated anew with the others.
  const from = Math.floor(oldLength / cs) * cs;
  const head = oldLength - from;
  if (head > 0 && !readGuest) return 'preallocation from a size that is not whole clusters needs the guest disk';
  // qemu's l2_entry_size: 16 bytes with extended L2 (the subcluster bitmap stays 0 without a backing file).
  const es = h.extendedL2 ? 16 : 8;
  const { refs } = state;
  const sizeBefore = state.fileSize;
  // qcow2_get_last_cluster over the file as it is now (the L1 growth may have extended it).
  const lastUsed = refs.lastUsed(Math.ceil(state.fileSize / cs));
  const dataClusters = Math.ceil(to / cs) - from / cs;
  const perL2 = cs / es;
  const l2Tables = Math.ceil(dataClusters / perL2) + 1;
  const start = refs.refcountArea(lastUsed + 1, dataClusters + l2Tables, true);
  refs.allocAt(start, dataClusters);
  const dataEnd = (start + dataClusters) * cs;
  state.fileSize = Math.max(state.fileSize, dataEnd);
  const tables = new Map<number, GrowTable>();
  let host = start;
  let replaced = 0n;
  /** The old last cluster's bytes (a compressed one's sectors), freed by link_l2. */
  let oldSpan: { hostOffset: number; length: number } | undefined;
  const cow: RepairStep[] = [];
  for (let pos = from; pos < to;) {
    const { l1Index, end, first, count } = l2Range(pos, to, cs, es);
    const table = growTable(dev, h, state, tables, l1Index);
    if (typeof table === 'string') return table;
    for (let i = first; i < first + count; i++) {
      if (head > 0 && pos === from && i === first) {
        replaced = table.bytes.readBigUInt64BE(i * es);
        // link_l2 frees it at once: a later missing L2 table may be allocated there. A compressed
        // cluster frees the 512-byte sectors its bytes touch (one reference off each cluster).
        if (replaced & COMPRESSED) {
          const span = compressedSpan(Number(replaced >> 32n), Number(replaced & 0xffffffffn), h.clusterBits);
          if (span.hostOffset >= dev.size) return 'its compressed last cluster lies outside the file';
          oldSpan = span;
        } else if (replaced & OFFSET_MASK) oldSpan = { hostOffset: Number(replaced & OFFSET_MASK), length: cs };
        if (oldSpan) refs.update(oldSpan.hostOffset, oldSpan.length, 1, true, { discard: false });
        const bytes = new Uint8Array(head);
        readGuest!(bytes, from);
        cow.push({ kind: 'write', pos: host * cs, bytes });
      } else if (!isZero(table.bytes, i * es, es)) return 'the new area already has L2 entries';
      table.bytes.writeBigUInt64BE(BigInt((host + i - first) * cs) | COPIED, i * es);
      if (h.extendedL2 && overBacking) table.bytes.writeBigUInt64BE(ALL_ALLOCATED, i * es + 8);
    }
    host += count;
    pos = end;
  }
  // The old last cluster's reference is written as dropped only once the table no longer names it
  // (the caller's last refcount flush; QCOW2_DISCARD_NEVER: no discard); a new table that reuses
  // the cluster is written after that table.
  const oldClusters: number[] = [];
  if (oldSpan) for (let c = Math.floor(oldSpan.hostOffset / cs); c * cs < oldSpan.hostOffset + oldSpan.length; c++) oldClusters.push(c);
  const held = oldClusters.filter((c) => refs.get(c) < refs.original(c));
  for (const c of held) refs.update(c * cs, cs, 1, false, { discard: false });
  const steps = growSteps(state, tables, sizeBefore, Math.max(state.fileSize, dataEnd), cow, { firstTableAlone: oldClusters.length > 0 });
  for (const c of held) refs.update(c * cs, cs, 1, true, { discard: false });
  // full: the run written with zeros (allocated on disk) before any table points at it.
  if (mode === 'full' && dataClusters > 0) {
    const at = steps.findIndex((s) => s.kind === 'barrier');
    steps.splice(at + 1, 0, { kind: 'zero', pos: start * cs, length: dataClusters * cs }, { kind: 'barrier' });
  }
  return steps;
}
