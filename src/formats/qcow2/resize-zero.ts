// A qcow2 grow under a backing file longer than the image: qemu's block layer asks the driver to
// make the new area read as zeros (BDRV_REQ_ZERO_WRITE) rather than show the backing file's
// bytes. qemu's qcow2_subcluster_zeroize marks every cluster from the old end (rounded up to a
// subcluster) to the new end zero: the ZERO flag of a standard entry, the all-zero bitmap of an
// extended one; an L1 entry without an L2 table gets a new table first (first-fit), as
// get_cluster_table allocates it. An old end inside a cluster: qemu then writes explicit zeros
// from it to the cluster's end, a guest write (head-write below); compressed clusters refused.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import type { Qcow2Header } from './header.ts';
import { allocateClusters, growSteps, growTable, type GrowState, type GrowTable } from './resize-prealloc.ts';

const ZERO_FLAG = 1n;
const COMPRESSED = 1n << 62n;
const COPIED = 1n << 63n;
const OFFSET_MASK = 0x00fffffffffffe00n;

/** Reads the guest disk as it is before the resize (the backing chain included). */
export type GuestReader = (buf: Uint8Array, offset: number) => void;
/** QCOW_L2_BITMAP_ALL_ZEROES: every subcluster reads as zeros, none allocated. */
const ALL_ZEROES = 0xffffffff00000000n;

export function zeroNewArea(dev: BlockDevice, h: Qcow2Header, state: GrowState, oldLength: number, newSize: number, readGuest?: GuestReader): RepairStep[] | string {
  const cs = h.clusterSize;
  const subcluster = h.extendedL2 ? cs / 32 : cs;
  const zeroStart = Math.ceil(oldLength / subcluster) * subcluster;
  const head = zeroStart !== oldLength;
  if (head && !readGuest) return 'its old size ends inside a cluster: qemu would write zeros into it';
  const sizeBefore = state.fileSize;
  const entrySize = h.extendedL2 ? 16 : 8;
  const l2Span = (cs / entrySize) * cs;
  const tables = new Map<number, GrowTable>();
  let pos = zeroStart;
  if (pos % cs !== 0 && pos < newSize) {
    // Extended L2 entries: the rest of the cluster the zeroing starts in (zero_l2_subclusters).
    const table = growTable(dev, h, state, tables, Math.floor(pos / l2Span));
    if (typeof table === 'string') return table;
    const at = Math.floor((pos % l2Span) / cs) * entrySize;
    if (table.bytes.readBigUInt64BE(at) & COMPRESSED) return 'compressed clusters lie past its old end';
    const clusterStart = Math.floor(pos / cs) * cs;
    const first = (pos - clusterStart) / subcluster;
    const count = Math.ceil((Math.min(newSize, clusterStart + cs) - pos) / subcluster);
    const range = ((1n << BigInt(first + count)) - 1n) & ~((1n << BigInt(first)) - 1n);
    table.bytes.writeBigUInt64BE((table.bytes.readBigUInt64BE(at + 8) | (range << 32n)) & ~range, at + 8);
    pos = clusterStart + cs;
  }
  for (; pos < newSize;) {
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
  const data: RepairStep[] = [];
  const released: number[] = [];
  if (head) {
    const end = Math.min(zeroStart, newSize);
    const written = h.extendedL2 ? headWriteExtended(dev, h, state, tables, oldLength, end, readGuest!) : headWrite(dev, h, state, tables, oldLength, end, readGuest!, released);
    if (typeof written === 'string') return written;
    data.push(written);
  }
  if (data.length === 0 && tables.size === 0) return [];
  const steps = growSteps(state, tables, sizeBefore, state.fileSize, data);
  for (const host of released) state.refs.update(host, cs, 1, true, { discard: false });
  return steps;
}

/**
 * qemu's "explicit zeros for the unaligned head" (after the zeroing above): a guest write of zeros
 * over [oldLength, end) of the old last cluster. Into a cluster the image owns alone it goes in
 * place; an unallocated or zero cluster gets a new one (first-fit, after the tables above) holding
 * what the guest read before the old end (backing file bytes; zeros for a zero cluster), then the
 * zeros; so does one a snapshot shares (which then loses the active disk's reference), and a
 * preallocated zero cluster is written whole in place. A compressed cluster, or a new end inside
 * the cluster (qemu would copy the backing file's bytes past it), is refused.
 */
function headWrite(dev: BlockDevice, h: Qcow2Header, state: GrowState, tables: Map<number, GrowTable>, oldLength: number, end: number, readGuest: GuestReader, released: number[]): RepairStep | string {
  const cs = h.clusterSize;
  const l2Span = (cs / 8) * cs;
  const clusterStart = Math.floor(oldLength / cs) * cs;
  const table = growTable(dev, h, state, tables, Math.floor(oldLength / l2Span));
  if (typeof table === 'string') return table;
  const at = ((clusterStart % l2Span) / cs) * 8;
  const entry = table.bytes.readBigUInt64BE(at);
  const host = Number(entry & OFFSET_MASK);
  if (entry & COMPRESSED) return 'its last cluster is compressed: qemu would copy it';
  if (host !== 0 && entry & COPIED) {
    if (host % cs !== 0 || host + cs > dev.size) return 'its last cluster lies outside the file';
    if (!(entry & ZERO_FLAG)) return { kind: 'write', pos: host + (oldLength - clusterStart), bytes: new Uint8Array(end - oldLength) };
    // Preallocated zeros the image owns: the whole cluster written in place (its copy reads
    // zeros), the entry no longer a zero cluster.
    if (end !== clusterStart + cs) return 'its new size ends inside its old last cluster: qemu would copy the backing file there';
    table.bytes.writeBigUInt64BE(BigInt(host) | COPIED, at);
    return { kind: 'write', pos: host, bytes: new Uint8Array(cs) };
  }
  if (end !== clusterStart + cs) return 'its new size ends inside its old last cluster: qemu would copy the backing file there';
  // Shared with a snapshot: a new cluster as for an unallocated one; the old one loses the
  // active disk's reference once the table names the new one (the caller's last refcount flush).
  if (host !== 0 && state.refs.get(host / cs) < 2) return 'its last cluster is shared but counted once';
  const cluster = allocateClusters(state, 1);
  if (cluster === undefined) return 'a refcount of a new cluster is out of range';
  const bytes = new Uint8Array(cs);
  if (!(entry & ZERO_FLAG)) readGuest(bytes.subarray(0, oldLength - clusterStart), clusterStart);
  table.bytes.writeBigUInt64BE(BigInt(cluster * cs) | COPIED, at);
  state.fileSize = Math.max(state.fileSize, (cluster + 1) * cs);
  if (host !== 0) released.push(host);
  return { kind: 'write', pos: cluster * cs, bytes };
}

/**
 * headWrite with extended L2 entries: the write covers the old end's subcluster only. A cluster
 * the image owns alone is written in place (a subcluster not allocated yet, or reading as zeros,
 * gets the guest's bytes before the old end first and its allocation bit); an unallocated one gets
 * a new cluster (first-fit) with that subcluster alone written and allocated, as handle_alloc and
 * link_l2 leave it. Shared or compressed clusters, or a new end inside the subcluster, are refused.
 */
function headWriteExtended(dev: BlockDevice, h: Qcow2Header, state: GrowState, tables: Map<number, GrowTable>, oldLength: number, end: number, readGuest: GuestReader): RepairStep | string {
  const cs = h.clusterSize;
  const subcluster = cs / 32;
  const l2Span = (cs / 16) * cs;
  const clusterStart = Math.floor(oldLength / cs) * cs;
  const scStart = Math.floor(oldLength / subcluster) * subcluster;
  if (end !== scStart + subcluster) return 'its new size ends inside its old last subcluster: qemu would copy the backing file there';
  const table = growTable(dev, h, state, tables, Math.floor(oldLength / l2Span));
  if (typeof table === 'string') return table;
  const at = ((clusterStart % l2Span) / cs) * 16;
  const entry = table.bytes.readBigUInt64BE(at);
  const bitmap = table.bytes.readBigUInt64BE(at + 8);
  const sc = BigInt((scStart - clusterStart) / subcluster);
  const alloc = 1n << sc;
  let host = Number(entry & OFFSET_MASK);
  if (entry & COMPRESSED) return 'its last cluster is compressed: qemu would copy it';
  if (host !== 0) {
    if (!(entry & COPIED)) return 'its last cluster is shared: qemu would copy it';
    // qemu writes only the subclusters it allocates: the file may end inside the cluster.
    if (host % cs !== 0 || host >= dev.size) return 'its last cluster lies outside the file';
    state.fileSize = Math.max(state.fileSize, host + (end - clusterStart));
    // An allocated subcluster takes the zeros in place.
    if (bitmap & alloc) return { kind: 'write', pos: host + (oldLength - clusterStart), bytes: new Uint8Array(end - oldLength) };
  } else {
    const cluster = allocateClusters(state, 1);
    if (cluster === undefined) return 'a refcount of a new cluster is out of range';
    host = cluster * cs;
    table.bytes.writeBigUInt64BE(BigInt(host) | COPIED, at);
    // The file reaches as far as the subcluster's write, not the whole new cluster.
    state.fileSize = Math.max(state.fileSize, host + (scStart - clusterStart) + subcluster);
  }
  // The subcluster's copy-on-write (the guest's bytes before the old end: backing file or zeros), then the zeros.
  const bytes = new Uint8Array(subcluster);
  readGuest(bytes.subarray(0, oldLength - scStart), scStart);
  table.bytes.writeBigUInt64BE((bitmap | alloc) & ~(alloc << 32n), at + 8);
  return { kind: 'write', pos: host + (scStart - clusterStart), bytes };
}
