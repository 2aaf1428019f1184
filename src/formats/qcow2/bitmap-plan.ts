// qemu-img bitmap for qcow2 as a pure planner: it replays what qemu does to the file, in qemu's
// order, and returns those writes as executor steps (formats/repair.ts).
//   open (qcow2_load_dirty_bitmaps): bitmaps not in use are loaded and marked in use in place
//     (header without the autoclear bit, directory, header with it again);
//   the actions, in command-line order, over the bitmaps in memory (a removal rewrites the
//     directory at once and frees the bitmap's clusters);
//   close (qcow2_store_persistent_dirty_bitmaps): every consistent bitmap is written anew (data
//     clusters, then its table), then a new directory, refcounts, the header; the old directory
//     and tables are freed last (data clusters discarded, which reads back as zeros).
// Allocation replays qemu's allocator over RefcountModel, so the file ends byte-identical.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { parseHeader, type Qcow2Header } from './header.ts';
import { readHeaderModel } from './header-model.ts';
import { serializeHeader, type Qcow2HeaderModel } from './header-write.ts';
import { PlanRefusal, RefcountModel } from './refcount-update.ts';
import { allocClusters, freeClusters } from './allocator.ts';
import { DirtyBits } from './bitmap-bits.ts';
import { entrySize, FLAG_AUTO, FLAG_IN_USE, readDirectory, serializeDirectory, TABLE_ENTRY_OFFSET, type DirBitmap } from './bitmap-dir.ts';
import { checkBitmapClusters } from './bitmap-guard.ts';
import { loadBitmaps, readTable, type LiveBitmap } from './bitmap-state.ts';
import { storeBitmapData } from './writer-bitmaps.ts';
import { bitmapAction, type ActionContext, type BitmapRequest } from './bitmap-actions.ts';

const AUTOCLEAR_BITMAPS = 1n;
const KNOWN_AUTOCLEAR = 3n;
/** Most bytes a plan may add past the end of the file (bitmap data is at most 512 MiB a bitmap). */
const MAX_GROWTH = 2 * 1024 * 1024 * 1024;

export interface BitmapPlan {
  steps: RepairStep[];
  /** qemu's words for the action that failed (the ones before it are kept, as qemu keeps them). */
  error?: string;
}

class Planner {
  readonly h: Qcow2Header;
  readonly model: Qcow2HeaderModel;
  readonly refs: RefcountModel;
  readonly cs: number;
  readonly steps: RepairStep[] = [];
  live: LiveBitmap[];
  /** The directory as the file holds it now (s->bitmap_directory_*). */
  disk: DirBitmap[];

  /** `carried`: the bitmaps as an earlier open loaded them (a close after other writes). */
  constructor(readonly dev: BlockDevice, carried?: LiveBitmap[]) {
    this.h = parseHeader(dev);
    // A close after amend's downgrade: the v2 header kept the extension qemu's open loaded.
    const downgraded = carried !== undefined && this.h.version === 2;
    this.model = readHeaderModel(dev, this.h, { loadedBitmaps: downgraded });
    this.refs = new RefcountModel(dev, this.h);
    this.cs = this.h.clusterSize;
    const loaded = downgraded ? { live: carried, disk: this.model.bitmaps ? readDirectory(dev, this.model.bitmaps) : [] } : loadBitmaps(dev, this.h, this.model.bitmaps, this.model.size);
    this.live = carried ?? loaded.live;
    this.disk = loaded.disk;
    const dir = this.model.bitmaps;
    checkBitmapClusters(dev, this.h, dir && { offset: dir.directoryOffset, size: Number(dir.directorySize) }, this.disk);
  }

  write(pos: number, bytes: Uint8Array): void {
    // Clusters of a refcount table a growth replaced are written only after the switch to the new one.
    if (this.refs.switchPending && this.refs.retiredClusters().has(Math.floor(pos / this.cs))) this.flushRefcounts();
    this.steps.push({ kind: 'write', pos, bytes });
  }

  barrier(): void {
    this.steps.push({ kind: 'barrier' });
  }

  /** qcow2_update_header + flush: the whole first cluster. */
  writeHeader(): void {
    // A header written after a refcount table growth names the new table (its switch comes first).
    if (this.refs.switchPending) this.flushRefcounts();
    const table = this.refs.tableLocation;
    this.model.refcountTableOffset = BigInt(table.offset);
    this.model.refcountTableClusters = table.clusters;
    this.write(0, serializeHeader(this.model));
    this.barrier();
  }

  /** qcow2_flush_caches: refcount blocks changed so far, then new blocks hooked into the table. */
  flushRefcounts(): void {
    const blocks = this.refs.flush();
    const hooks = this.refs.tableWrites('hooked');
    for (const s of [...blocks, ...hooks.map((w): RepairStep => ({ kind: 'write', pos: w.pos, bytes: w.bytes }))]) this.steps.push(s);
    if (blocks.length + hooks.length > 0) this.barrier();
  }

  /** The open: bitmaps not in use get the in-use flag, written in place under a cleared autoclear bit. */
  open(): void {
    if (this.model.bitmaps && this.disk.some((bm) => !(bm.flags & FLAG_IN_USE))) {
      for (const bm of this.disk) bm.flags |= FLAG_IN_USE;
      this.model.autoclear &= ~AUTOCLEAR_BITMAPS;
      this.writeHeader();
      this.write(Number(this.model.bitmaps.directoryOffset), serializeDirectory(this.disk));
      this.barrier();
      this.model.autoclear |= AUTOCLEAR_BITMAPS;
      this.writeHeader();
    } else if (this.h.autoclear & ~KNOWN_AUTOCLEAR || this.model.staleBitmaps) {
      // qemu drops autoclear bits it does not know, and a stale bitmaps extension, on a writable open.
      this.writeHeader();
    }
  }

  /** update_ext_header_and_dir: a new directory (or none), the header, the old one freed. */
  storeDirectory(list: DirBitmap[]): void {
    const old = this.model.bitmaps;
    if (list.length > 0) {
      const dir = serializeDirectory(list);
      const offset = allocClusters(this.refs, dir.length);
      this.write(offset, dir);
      this.flushRefcounts();
      this.model.bitmaps = { count: list.length, directorySize: BigInt(dir.length), directoryOffset: BigInt(offset) };
      this.model.autoclear |= AUTOCLEAR_BITMAPS;
    } else {
      this.model.bitmaps = undefined;
      this.model.autoclear &= ~AUTOCLEAR_BITMAPS;
    }
    this.barrier();
    this.writeHeader();
    if (old && old.directorySize > 0n) freeClusters(this.refs, Number(old.directoryOffset), Number(old.directorySize));
    this.disk = list;
  }

  /** free_bitmap_clusters: the data clusters (discarded: punched by the host) and the table; nothing when the table is bad. */
  freeTable(offset: bigint, size: number): void {
    const table = readTable(this.dev, offset, size, this.cs);
    if (!table) return;
    for (const entry of table) {
      const addr = Number(entry & TABLE_ENTRY_OFFSET);
      if (addr === 0) continue;
      freeClusters(this.refs, addr, this.cs);
      if (this.refs.get(addr / this.cs) === 0 && addr < this.dev.size) this.steps.push({ kind: 'discard', pos: addr, length: Math.min(this.cs, this.dev.size - addr), unit: this.cs });
    }
    freeClusters(this.refs, Number(offset), size * 8);
  }

  /** store_bitmap (writer-bitmaps.ts): the data clusters with dirty bits, then the table; returns where the table went. */
  storeBitmap(bits: DirtyBits): { offset: bigint; size: number } {
    return storeBitmapData(bits, (bytes) => allocClusters(this.refs, bytes), (pos, bytes) => this.write(pos, bytes));
  }

  /** qcow2_store_persistent_dirty_bitmaps at close. */
  close(): void {
    const stored = this.live.filter((l) => !l.inconsistent);
    if (stored.length > 0) {
      const list = this.disk.map((bm) => ({ ...bm }));
      const drop: { offset: bigint; size: number }[] = [];
      const owner = new Map<DirBitmap, LiveBitmap>();
      for (const l of stored) {
        let bm = list.find((b) => b.name.equals(l.name));
        if (!bm) {
          bm = { name: l.name, tableOffset: 0n, tableSize: 0, flags: 0, granularityBits: 0 };
          list.push(bm);
        } else {
          drop.push({ offset: bm.tableOffset, size: bm.tableSize });
          bm.tableOffset = 0n;
          bm.tableSize = 0;
        }
        bm.flags = l.enabled ? FLAG_AUTO : 0;
        bm.granularityBits = l.granularityBits;
        owner.set(bm, l);
      }
      for (const bm of list) {
        const l = owner.get(bm);
        if (!l) continue;
        const t = this.storeBitmap(l.bits);
        bm.tableOffset = t.offset;
        bm.tableSize = t.size;
      }
      this.storeDirectory(list);
      for (const t of drop) if (t.size > 0) this.freeTable(t.offset, t.size);
    }
    this.flushRefcounts();
  }

  /** The steps, with the file grown first to where qemu's writes end. */
  plan(): RepairStep[] {
    let end = this.dev.size;
    for (const s of this.steps) if (s.kind === 'write') end = Math.max(end, s.pos + s.bytes.length);
    if (end - this.dev.size > MAX_GROWTH) throw new PlanRefusal(`instar refuses this qcow2 image: its refcounts would place new clusters ${end - this.dev.size} bytes past the end of the file; nothing was written`);
    return end > this.dev.size ? [{ kind: 'truncate', size: end }, { kind: 'barrier' }, ...this.steps] : this.steps;
  }
}

/** Plans `qemu-img bitmap` on a qcow2 image the driver opened. */
export function planBitmap(dev: BlockDevice, request: BitmapRequest): BitmapPlan {
  const p = new Planner(dev);
  p.open();
  const ctx: ActionContext = {
    h: p.h,
    virtualSize: p.model.size,
    live: () => p.live,
    setLive: (l) => { p.live = l; },
    diskCount: () => p.disk.length,
    diskDirectorySize: () => p.disk.reduce((n, bm) => n + entrySize(bm.name.length), 0),
    removeFromDisk: (name) => {
      const bm = p.disk.find((b) => b.name.equals(name));
      if (!bm) return;
      p.storeDirectory(p.disk.filter((b) => b !== bm));
      p.freeTable(bm.tableOffset, bm.tableSize);
    },
  };
  let error: string | undefined;
  for (const action of request.actions) {
    const failed = bitmapAction(ctx, action, request);
    if (failed !== undefined) {
      error = `Operation ${action.kind} on bitmap ${request.name} failed: ${failed}`;
      break;
    }
  }
  p.close();
  return { steps: p.plan(), error };
}

/** What the change between open and close did that the close must follow. */
export interface CloseOptions {
  /** The disk's new size (resize): the bitmaps are truncated to it as qemu's block layer does. */
  virtualSize?: bigint;
  /** qemu's free_cluster_index as the change left it (allocation goes on from there). */
  freeClusterIndex?: number;
  /** Guest byte ranges [start, end) the change wrote: the enabled bitmaps record them. */
  dirtied?: readonly [number, number][];
  /** Bitmaps created after the change (convert -n --bitmaps): first in qemu's list, recording none of its writes. */
  added?: readonly LiveBitmap[];
}

export interface BitmapReopen {
  open: RepairStep[];
  /** The bitmaps the open loaded, in qemu's list order. */
  live: readonly LiveBitmap[];
  close(after: BlockDevice, opts?: CloseOptions): RepairStep[];
}

/**
 * What a writable open and the close do to the bitmaps around another change (check -r, resize,
 * snapshot): the open's in-use marking now (or the header without a stale extension), and a
 * function planning the close over the image as the change left it, with the bitmaps the open loaded.
 */
export function planBitmapReopen(dev: BlockDevice): BitmapReopen {
  const p = new Planner(dev);
  p.open();
  return {
    open: p.plan(),
    live: p.live,
    close: (after, opts = {}) => {
      const size = opts.virtualSize;
      const live = size === undefined ? p.live : p.live.map((l) => ({ ...l, bits: l.bits.truncated(size) }));
      for (const l of live) if (l.enabled && !l.inconsistent) for (const range of opts.dirtied ?? []) l.bits.setByteRange(range[0], range[1]);
      const q = new Planner(after, [...(opts.added ?? []), ...live]);
      if (opts.freeClusterIndex !== undefined) q.refs.freeClusterIndex = opts.freeClusterIndex;
      q.close();
      return q.plan();
    },
  };
}
