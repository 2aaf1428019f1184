// A qcow2 grow under a backing file longer than the image: qemu's block layer asks the driver to
// make the new area read as zeros (BDRV_REQ_ZERO_WRITE) rather than show the backing file's
// bytes. qemu's qcow2_subcluster_zeroize marks every cluster from the old end (rounded up to a
// subcluster) to the new end zero: the ZERO flag of a standard entry, the all-zero bitmap of an
// extended one; an L1 entry without an L2 table gets a new table first (first-fit), as
// get_cluster_table allocates it. An old end inside a cluster (qemu then writes explicit zeros)
// and compressed clusters are refused by the caller.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import type { Qcow2Header } from './header.ts';
import { growSteps, growTable, type GrowState, type GrowTable } from './resize-prealloc.ts';

const ZERO_FLAG = 1n;
const COMPRESSED = 1n << 62n;
/** QCOW_L2_BITMAP_ALL_ZEROES: every subcluster reads as zeros, none allocated. */
const ALL_ZEROES = 0xffffffff00000000n;

export function zeroNewArea(dev: BlockDevice, h: Qcow2Header, state: GrowState, oldLength: number, newSize: number): RepairStep[] | string {
  const cs = h.clusterSize;
  const subcluster = h.extendedL2 ? cs / 32 : cs;
  const zeroStart = Math.ceil(oldLength / subcluster) * subcluster;
  if (zeroStart !== oldLength || zeroStart % cs !== 0) return 'its old size ends inside a cluster: qemu would write zeros into it';
  if (newSize <= zeroStart) return [];
  const sizeBefore = state.fileSize;
  const entrySize = h.extendedL2 ? 16 : 8;
  const l2Span = (cs / entrySize) * cs;
  const tables = new Map<number, GrowTable>();
  for (let pos = zeroStart; pos < newSize;) {
    const l1Index = Math.floor(pos / l2Span);
    const tableEnd = Math.min(newSize, (l1Index + 1) * l2Span);
    const table = growTable(dev, h, state, tables, l1Index);
    if (typeof table === 'string') return table;
    for (; pos < tableEnd; pos += cs) {
      const at = ((pos % l2Span) / cs) * entrySize;
      const entry = table.bytes.readBigUInt64BE(at);
      if (entry & COMPRESSED) return 'compressed clusters lie past its old end';
      if (h.extendedL2) table.bytes.writeBigUInt64BE(ALL_ZEROES, at + 8);
      else table.bytes.writeBigUInt64BE(entry | ZERO_FLAG, at);
    }
  }
  return growSteps(state, tables, sizeBefore, state.fileSize);
}
