// The persistent bitmaps of a qcow2 image as qemu holds them in memory once it has opened the
// image (qcow2_load_dirty_bitmaps): each bitmap's bits loaded from its table, or marked
// inconsistent when the image says it is in use. Pure: reads the device, writes nothing.
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import { PlanRefusal } from './refcount-update.ts';
import type { Qcow2Header } from './header.ts';
import type { BitmapsExtension } from './extensions.ts';
import { DirtyBits } from './bitmap-bits.ts';
import { FLAG_AUTO, FLAG_IN_USE, parseTable, readDirectory, TABLE_ENTRY_OFFSET, type DirBitmap } from './bitmap-dir.ts';

/** A BdrvDirtyBitmap: qemu's in-memory bitmap. */
export interface LiveBitmap {
  name: Buffer;
  granularityBits: number;
  enabled: boolean;
  /** Marked in use in the image when it was opened: its data is lost, it can only be removed. */
  inconsistent: boolean;
  bits: DirtyBits;
}

/**
 * Most bytes of bitmap data one plan loads (instar's bound; qemu has none): 64 MiB is a 32 TiB
 * disk at 64 KiB granularity, and keeps merges, which walk the bits, to seconds.
 */
const MAX_DATA_BYTES = 64 * 1024 * 1024;

/** The bitmap's table as qemu's bitmap_table_load reads it; undefined when an entry is invalid. */
export function readTable(dev: BlockDevice, offset: bigint, size: number, clusterSize: number): bigint[] | undefined {
  return parseTable(readAt(dev, offset, size * 8), clusterSize);
}

/** load_bitmap_data: the bits of a bitmap whose table the driver's open already checked. */
function loadBits(dev: BlockDevice, bm: DirBitmap, bits: DirtyBits, budget: { left: number }): void {
  const cs = bits.clusterSize;
  const table = readTable(dev, bm.tableOffset, bm.tableSize, cs);
  if (!table || table.length !== bits.chunkCount) throw new ImageError(`Could not read bitmap '${bm.name.toString('utf8')}' from image: Invalid argument`);
  table.forEach((entry, i) => {
    const offset = entry & TABLE_ENTRY_OFFSET;
    if (offset === 0n) {
      if (entry & 1n) bits.fillChunk(i);
      return;
    }
    budget.left -= cs;
    if (budget.left < 0) throw new PlanRefusal('instar refuses this image: its bitmaps hold too much data; nothing was written');
    bits.loadChunk(i, readAt(dev, offset, cs));
  });
}

/**
 * The bitmaps qemu creates when it opens the image, in the order of its list of dirty bitmaps
 * (each new one goes to the head), and the directory as read.
 */
export function loadBitmaps(dev: BlockDevice, h: Qcow2Header, ext: BitmapsExtension | undefined, virtualSize: bigint): { live: LiveBitmap[]; disk: DirBitmap[] } {
  if (!ext || h.version < 3) return { live: [], disk: [] };
  const disk = readDirectory(dev, ext);
  const live: LiveBitmap[] = [];
  const budget = { left: MAX_DATA_BYTES };
  for (const bm of disk) {
    const inUse = (bm.flags & FLAG_IN_USE) !== 0;
    // An in-use entry whose name is already loaded is skipped (qemu's migration case).
    if (inUse && live.some((l) => l.name.equals(bm.name))) continue;
    const bits = new DirtyBits(virtualSize, bm.granularityBits, h.clusterSize);
    if (!inUse) loadBits(dev, bm, bits, budget);
    live.unshift({ name: bm.name, granularityBits: bm.granularityBits, enabled: (bm.flags & FLAG_AUTO) !== 0, inconsistent: inUse, bits });
  }
  return { live, disk };
}
