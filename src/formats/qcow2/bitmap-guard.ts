// instar's own check before it plans bitmap writes (qemu has only its overlap check at write
// time): every cluster a bitmap owns (the directory, each table, each data cluster) must be
// owned by nothing else, neither qcow2 metadata nor another bitmap, or freeing it at close would
// free metadata in use and a later allocation would overwrite it. Reads are bounded.
import type { BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import type { Qcow2Header } from './header.ts';
import { PlanRefusal } from './refcount-update.ts';
import { readSnapshotTable } from './snapshot-table.ts';
import { parseTable, TABLE_ENTRY_OFFSET, type DirBitmap } from './bitmap-dir.ts';

const OFFSET_MASK = 0x00fffffffffffe00n;
/** Most bytes of L1 and bitmap tables the check reads. */
const MAX_READ = 512 * 1024 * 1024;

class Owners {
  private readonly owner = new Map<number, string>();
  private budget = MAX_READ;

  constructor(readonly cs: number) {}

  /** Claims the clusters of [offset, offset + length) for `who`; refuses a cluster claimed twice. */
  claim(offset: bigint, length: number, who: string): void {
    if (length <= 0) return;
    const first = offset / BigInt(this.cs);
    const last = (offset + BigInt(length) - 1n) / BigInt(this.cs);
    if (last - first > 1n << 24n) throw new PlanRefusal(`instar refuses this qcow2 image: ${who} is too large; nothing was written`);
    for (let c = Number(first); c <= Number(last); c++) {
      const other = this.owner.get(c);
      if (other !== undefined) throw new PlanRefusal(`instar refuses this qcow2 image: ${who} overlaps ${other}; nothing was written`);
      this.owner.set(c, who);
    }
  }

  read(dev: BlockDevice, offset: bigint, length: number): Buffer {
    this.budget -= length;
    if (this.budget < 0) throw new PlanRefusal('instar refuses this qcow2 image: its tables are too large to check; nothing was written');
    return readAt(dev, offset, length);
  }
}

/** The clusters of qcow2 metadata: header, refcount table and blocks, L1 and L2 tables, snapshots. */
function claimMetadata(dev: BlockDevice, h: Qcow2Header, o: Owners): void {
  o.claim(0n, h.clusterSize, 'the header');
  const reftableBytes = h.refcountTableClusters * h.clusterSize;
  o.claim(h.refcountTableOffset, reftableBytes, 'the refcount table');
  const reftable = o.read(dev, h.refcountTableOffset, reftableBytes);
  for (let at = 0; at < reftable.length; at += 8) {
    const block = reftable.readBigUInt64BE(at) & OFFSET_MASK;
    if (block !== 0n) o.claim(block, h.clusterSize, 'a refcount block');
  }
  const l1s: [bigint, number, string][] = [[h.l1TableOffset, h.l1Size, 'the L1 table']];
  if (h.nbSnapshots > 0) {
    const { list, tableBytes } = readSnapshotTable(dev, h);
    o.claim(h.snapshotsOffset, tableBytes, 'the snapshot table');
    for (const sn of list) l1s.push([sn.l1TableOffset, sn.l1Size, 'a snapshot L1 table']);
  }
  const l2s = new Set<bigint>();
  for (const [offset, size, who] of l1s) {
    o.claim(offset, size * 8, who);
    const l1 = o.read(dev, offset, size * 8);
    for (let at = 0; at < l1.length; at += 8) {
      const l2 = l1.readBigUInt64BE(at) & OFFSET_MASK;
      if (l2 !== 0n) l2s.add(l2);
    }
  }
  // Snapshots share L2 tables with the active one: each counts once.
  for (const l2 of l2s) o.claim(l2, h.clusterSize, 'an L2 table');
}

/** Refuses an image whose bitmaps share clusters with metadata or with each other. */
export function checkBitmapClusters(dev: BlockDevice, h: Qcow2Header, directory: { offset: bigint; size: number } | undefined, disk: readonly DirBitmap[]): void {
  if (!directory) return;
  const o = new Owners(h.clusterSize);
  claimMetadata(dev, h, o);
  o.claim(directory.offset, directory.size, 'the bitmap directory');
  for (const bm of disk) {
    const who = `bitmap '${bm.name.toString('utf8')}'`;
    o.claim(bm.tableOffset, bm.tableSize * 8, `the table of ${who}`);
    const table = parseTable(o.read(dev, bm.tableOffset, bm.tableSize * 8), h.clusterSize);
    if (!table) continue; // qemu frees nothing of a table it cannot load
    for (const entry of table) {
      const data = entry & TABLE_ENTRY_OFFSET;
      if (data !== 0n) o.claim(data, h.clusterSize, `the data of ${who}`);
    }
  }
}
