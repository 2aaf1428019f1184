// qemu's qcow2_make_empty as a pure planner, for commit's top image: make_completely_empty
// (block/qcow2.c) writes a fresh image's tables over the old ones in a fixed order, with the
// dirty bit set around it, so the result is deterministic and instar writes the same bytes in the
// same order (qemu's own crash window included: the dirty bit makes qemu rebuild the refcounts).
// The other path, discarding every cluster, is make-empty-discard.ts (images with bitmaps,
// version 2 images, internal snapshots); where that is not done either (encryption, a data
// file) the caller refuses first.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { AUTOCLEAR, CRYPT, INCOMPAT, parseHeader } from './header.ts';
import { writeRefcount } from './refcount-entry.ts';

/** Offset of incompatible_features, l1_table_offset (l1, reftable offset, reftable clusters follow). */
const INCOMPATIBLE_AT = 72;
const L1_TABLE_OFFSET_AT = 40;

/**
 * qcow2_make_empty's choice: make_completely_empty needs the dirty bit (version 3) and an image
 * nothing else reserves clusters in (snapshots, a LUKS header, bitmaps, a data file), with the L1
 * table and three clusters in one refcount block; otherwise qemu discards every cluster
 * (make-empty-discard.ts), a version 2 image included.
 */
export function emptiesCompletely(dev: BlockDevice): boolean {
  const h = parseHeader(dev);
  const l1Clusters = Math.ceil(h.l1Size / (h.clusterSize / 8));
  const perBlock = (h.clusterSize * 8) / 2 ** h.refcountOrder;
  return h.version >= 3 && h.nbSnapshots === 0 && !(h.autoclear & AUTOCLEAR.bitmaps) && h.cryptMethod !== CRYPT.luks &&
    !(h.incompatible & INCOMPAT.dataFile) && 3 + l1Clusters <= perBlock;
}

/** Why instar cannot empty this image as make_completely_empty would (undefined: it can); call emptiesCompletely first. */
export function makeEmptyRefusal(dev: BlockDevice): string | undefined {
  const h = parseHeader(dev);
  if (h.incompatible & (INCOMPAT.dirty | INCOMPAT.corrupt)) return 'it is dirty or corrupt';
  return undefined;
}

/** The writes of make_completely_empty; call makeEmptyRefusal first. */
export function planMakeEmpty(dev: BlockDevice): RepairStep[] {
  const h = parseHeader(dev);
  const cs = h.clusterSize;
  const l1Clusters = Math.ceil(h.l1Size / (cs / 8));
  const incompatible = (flags: bigint): RepairStep => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(flags);
    return { kind: 'write', pos: INCOMPATIBLE_AT, bytes: b };
  };
  const header = Buffer.alloc(20);
  header.writeBigUInt64BE(BigInt(3 * cs), 0);
  header.writeBigUInt64BE(BigInt(cs), 8);
  header.writeUInt32BE(1, 16);
  const reftableEntry = Buffer.alloc(8);
  reftableEntry.writeBigUInt64BE(BigInt(2 * cs));
  // The new refcount block counts the header, the table, itself and the L1 table's clusters.
  const used = Math.ceil((3 * cs + h.l1Size * 8) / cs);
  const block = Buffer.alloc(cs);
  for (let i = 0; i < used; i++) writeRefcount(block, i, 2 ** h.refcountOrder, 1);
  const end = (3 + l1Clusters) * cs;
  const steps: RepairStep[] = [];
  // Writing the zeros below may reach past the end of a small file (qemu's writes grow it);
  // zeros past the file's end need no writing (the final truncate leaves nothing there).
  const size = Math.max(dev.size, end);
  if (dev.size < end) steps.push({ kind: 'truncate', size: end });
  const l1At = Number(h.l1TableOffset);
  const l1Zeros = Math.max(0, Math.min(l1Clusters * cs, size - l1At));
  steps.push(incompatible(h.incompatible | INCOMPAT.dirty), { kind: 'barrier' });
  if (l1Zeros > 0) steps.push({ kind: 'zero', pos: l1At, length: l1Zeros }, { kind: 'barrier' });
  steps.push(
    { kind: 'zero', pos: cs, length: (2 + l1Clusters) * cs }, { kind: 'barrier' },
    { kind: 'write', pos: L1_TABLE_OFFSET_AT, bytes: header }, { kind: 'barrier' },
    { kind: 'write', pos: cs, bytes: reftableEntry }, { kind: 'barrier' },
    { kind: 'write', pos: 2 * cs, bytes: block }, { kind: 'barrier' },
    // qemu clears the dirty bit by rewriting the header (qcow2_update_header): its whole first
    // cluster, which allocates it all (the same bytes as clearing the bit alone).
    { kind: 'write', pos: 0, bytes: headerCluster(dev, cs, header, h.incompatible) }, { kind: 'barrier' },
    { kind: 'truncate', size: end },
  );
  return steps;
}

/** The first cluster as the header rewrite leaves it: the new table fields, the dirty bit clear. */
function headerCluster(dev: BlockDevice, cs: number, tables: Buffer, flags: bigint): Buffer {
  const cluster = Buffer.alloc(cs);
  dev.read(cluster.subarray(0, Math.min(cs, dev.size)), 0);
  tables.copy(cluster, L1_TABLE_OFFSET_AT);
  cluster.writeBigUInt64BE(flags, INCOMPATIBLE_AT);
  return cluster;
}
