// qemu's qcow2_grow_l1_table with an exact size, as resize (qcow2_co_truncate) and snapshot -a
// (qcow2_snapshot_goto, for a snapshot whose L1 table is longer than the active one) call it:
// the new table is allocated first-fit, written with the old entries and zeros after them, the
// header switched to it, and the old table's clusters freed in the refcount cache (no discard:
// their bytes stay in the file until reused).
import type { RepairStep } from '../repair.ts';
import { MAX_L1_BYTES } from './header.ts';
import { RefcountRangeError } from './refcount-update.ts';
import { allocClusters } from './allocator.ts';
import type { GrowState } from './resize-prealloc.ts';

const INT_MAX = 0x7fffffff;

/** The header's L1 fields (l1_size, l1_table_offset) as one 12-byte write at offset 36. */
function l1FieldsWrite(entries: number, offset: number): RepairStep {
  const b = Buffer.alloc(12);
  b.writeUInt32BE(entries, 0);
  b.writeBigUInt64BE(BigInt(offset), 4);
  return { kind: 'write', pos: 36, bytes: b };
}

/**
 * Grows `state`'s L1 table to `entries` (more than it has) and updates `state`; returns the steps
 * up to the header switch, `{ error }` for qemu's own failure (EFBIG), or `{ refused }` where
 * instar does not follow. The old table's refcount drop stays in `state.refs` (flushed by the
 * caller with the rest of its refcount changes), as qemu's cache holds it.
 */
export function growL1Table(state: GrowState, clusterSize: number, entries: number): RepairStep[] | { error: string } | { refused: string } {
  if (entries > Math.floor(INT_MAX / 8) || entries > MAX_L1_BYTES / 8) return { error: 'Failed to grow the L1 table: File too large' };
  const { refs } = state;
  const bytes = entries * 8;
  const steps: RepairStep[] = [];
  const fileStart = state.fileSize;
  // qcow2_alloc_clusters from a fresh open: first-fit from cluster 0; clusters no refcount
  // block covers get one as alloc_refcount_block makes it (the allocation then starts over).
  let offset: number;
  try {
    offset = allocClusters(refs, bytes);
  } catch (e) {
    if (e instanceof RefcountRangeError) return { refused: 'a refcount of its new L1 table is out of range' };
    throw e;
  }
  // The file extended for new refcount blocks past its end, the refcount blocks (new ones
  // included), then the table entries that hook new ones up (or a grown refcount table and
  // the header switch to it).
  const fileSize = Math.max(fileStart, refs.end);
  if (fileSize > fileStart) steps.push({ kind: 'truncate', size: fileSize });
  steps.push(...refs.flush(), { kind: 'barrier' });
  for (const w of refs.tableWrites('hooked')) steps.push({ kind: 'write', pos: w.pos, bytes: w.bytes }, { kind: 'barrier' });
  const table = Buffer.alloc(bytes);
  state.l1.copy(table);
  // qemu's write past the end of the file extends it to the table's end.
  if (offset + bytes > fileSize) steps.push({ kind: 'truncate', size: offset + bytes });
  // A copy: resize's preallocation links new L2 tables into `table` later, by writes of their own.
  steps.push({ kind: 'write', pos: offset, bytes: Buffer.from(table) }, { kind: 'barrier' });
  steps.push(l1FieldsWrite(entries, offset), { kind: 'barrier' });
  // The old table's clusters are freed in qemu's refcount cache (written at close); a freed
  // cluster lowers qemu's free_cluster_index (the model's hint).
  const oldStart = Math.floor(state.l1Offset / clusterSize);
  const oldEnd = Math.ceil((state.l1Offset + state.l1.length) / clusterSize);
  Object.assign(state, { l1: table, l1Offset: offset, fileSize: Math.max(fileSize, offset + bytes) });
  for (let c = oldStart; c < oldEnd; c++) {
    if (!refs.tryAdd(c, -1)) return { refused: 'a refcount of its old L1 table is out of range' };
  }
  return steps;
}
