// instar's own check before it plans bitmap writes (qemu has only its overlap check at write
// time): every cluster a bitmap owns (the directory, each table, each data cluster) must be
// owned by nothing else, neither qcow2 metadata nor another bitmap, or freeing it at close would
// free metadata in use and a later allocation would overwrite it. Only the bitmaps' clusters are
// held in memory; metadata is streamed past them. Reads are bounded.
import type { BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import type { Qcow2Header } from './header.ts';
import { PlanRefusal } from './refcount-update.ts';
import { readSnapshotTable } from './snapshot-table.ts';
import { parseTable, TABLE_ENTRY_OFFSET, type DirBitmap } from './bitmap-dir.ts';

const OFFSET_MASK = 0x00fffffffffffe00n;
/** Most bytes of metadata and bitmap tables the check reads. */
const MAX_READ = 256 * 1024 * 1024;
/** Most clusters one structure may span (a bitmap table is at most 8 MiB). */
const MAX_SPAN = 1 << 24;

const refuse = (why: string) => new PlanRefusal(`instar refuses this qcow2 image: ${why}; nothing was written`);

class BitmapClusters {
  private readonly owner = new Map<number, string>();
  private budget = MAX_READ;

  constructor(readonly cs: number) {}

  private clusters(offset: bigint, length: number, who: string): [number, number] {
    const first = offset / BigInt(this.cs);
    const last = (offset + BigInt(length) - 1n) / BigInt(this.cs);
    if (last - first >= BigInt(MAX_SPAN)) throw refuse(`${who} is too large`);
    return [Number(first), Number(last)];
  }

  /** Claims the clusters of [offset, offset + length) for a bitmap structure; one claimed twice is refused. */
  claim(offset: bigint, length: number, who: string): void {
    if (length <= 0) return;
    const [first, last] = this.clusters(offset, length, who);
    for (let c = first; c <= last; c++) {
      const other = this.owner.get(c);
      if (other !== undefined) throw refuse(`${who} overlaps ${other}`);
      this.owner.set(c, who);
    }
  }

  /** Refuses when metadata at [offset, offset + length) lies in a cluster a bitmap claimed. */
  metadata(offset: bigint, length: number, who: string): void {
    if (length <= 0) return;
    const [first, last] = this.clusters(offset, length, who);
    for (let c = first; c <= last; c++) {
      const owner = this.owner.get(c);
      if (owner !== undefined) throw refuse(`${owner} overlaps ${who}`);
    }
  }

  read(dev: BlockDevice, offset: bigint, length: number): Buffer {
    this.budget -= length;
    if (this.budget < 0) throw refuse('its tables are too large to check');
    return readAt(dev, offset, length);
  }
}

/** The clusters of qcow2 metadata, each checked against the bitmaps': header, refcounts, L1/L2, snapshots. */
function checkMetadata(dev: BlockDevice, h: Qcow2Header, b: BitmapClusters): void {
  b.metadata(0n, h.clusterSize, 'the header');
  const reftableBytes = h.refcountTableClusters * h.clusterSize;
  b.metadata(h.refcountTableOffset, reftableBytes, 'the refcount table');
  const reftable = b.read(dev, h.refcountTableOffset, reftableBytes);
  for (let at = 0; at < reftable.length; at += 8) {
    const block = reftable.readBigUInt64BE(at) & OFFSET_MASK;
    if (block !== 0n) b.metadata(block, h.clusterSize, 'a refcount block');
  }
  const l1s: [bigint, number, string][] = [[h.l1TableOffset, h.l1Size, 'the L1 table']];
  if (h.nbSnapshots > 0) {
    const { list, tableBytes } = readSnapshotTable(dev, h);
    b.metadata(h.snapshotsOffset, tableBytes, 'the snapshot table');
    for (const sn of list) l1s.push([sn.l1TableOffset, sn.l1Size, 'a snapshot L1 table']);
  }
  for (const [offset, size, who] of l1s) {
    b.metadata(offset, size * 8, who);
    const l1 = b.read(dev, offset, size * 8);
    for (let at = 0; at < l1.length; at += 8) {
      const l2 = l1.readBigUInt64BE(at) & OFFSET_MASK;
      if (l2 !== 0n) b.metadata(l2, h.clusterSize, 'an L2 table');
    }
  }
}

/** Refuses an image whose bitmaps share clusters with metadata or with each other. */
export function checkBitmapClusters(dev: BlockDevice, h: Qcow2Header, directory: { offset: bigint; size: number } | undefined, disk: readonly DirBitmap[]): void {
  if (!directory) return;
  const b = new BitmapClusters(h.clusterSize);
  b.claim(directory.offset, directory.size, 'the bitmap directory');
  for (const bm of disk) {
    const who = `bitmap '${bm.name.toString('utf8')}'`;
    b.claim(bm.tableOffset, bm.tableSize * 8, `the table of ${who}`);
    const table = parseTable(b.read(dev, bm.tableOffset, bm.tableSize * 8), h.clusterSize);
    if (!table) continue; // qemu frees nothing of a table it cannot load
    for (const entry of table) {
      const data = entry & TABLE_ENTRY_OFFSET;
      if (data !== 0n) b.claim(data, h.clusterSize, `the data of ${who}`);
    }
  }
  checkMetadata(dev, h, b);
}
