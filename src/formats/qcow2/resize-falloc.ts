// qcow2 grow with --preallocation=falloc|full (qemu's qcow2_co_truncate): the data clusters of the
// new area are placed in one run at the end of the file, after a refcount area (refcount blocks and
// a new refcount table, exact size) made from the end of the last cluster in use, that covers them
// and one L2 table per L2 range they span plus one; then the file is extended over the run, and the
// L2 tables are linked as qcow2_alloc_cluster_link_l2 does (a missing table first-fit, where the
// freed old refcount table is the first candidate). full writes the run's zeros; falloc would
// have the file system reserve them, which the sandboxed guest cannot ask for: instar extends the
// file (the same bytes, read as zeros, not reserved).
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import type { Qcow2Header } from './header.ts';
import { growSteps, growTable, isZero, l2Range, type GrowState, type GrowTable } from './resize-prealloc.ts';

const COPIED = 1n << 63n;

/** The steps, or why instar will not preallocate. */
export function preallocateData(dev: BlockDevice, h: Qcow2Header, state: GrowState, from: number, to: number, mode: 'falloc' | 'full'): RepairStep[] | string {
  const cs = h.clusterSize;
  if (from % cs !== 0) return 'preallocation from a size that is not whole clusters is not implemented';
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
  for (let pos = from; pos < to;) {
    const { l1Index, end, first, count } = l2Range(pos, to, cs, es);
    const table = growTable(dev, h, state, tables, l1Index);
    if (typeof table === 'string') return table;
    for (let i = first; i < first + count; i++) {
      if (!isZero(table.bytes, i * es, es)) return 'the new area already has L2 entries';
      table.bytes.writeBigUInt64BE(BigInt((host + i - first) * cs) | COPIED, i * es);
    }
    host += count;
    pos = end;
  }
  const steps = growSteps(state, tables, sizeBefore, Math.max(state.fileSize, dataEnd));
  // full: the run written with zeros (allocated on disk) before any table points at it.
  if (mode === 'full' && dataClusters > 0) {
    const at = steps.findIndex((s) => s.kind === 'barrier');
    steps.splice(at + 1, 0, { kind: 'zero', pos: start * cs, length: dataClusters * cs }, { kind: 'barrier' });
  }
  return steps;
}
