// amend -o refcount_bits=N: qemu's qcow2_change_refcount_order (block/qcow2-refcount.c), replayed
// so that every byte lands where qemu puts it. qemu walks the refcount table (old width) once per
// pass: allocating passes give every new-width refcount block that would count something a
// cluster (allocated the ordinary way, so the old structures count it, and may grow), then a new
// refcount table, until a pass allocates nothing; a last pass fills the new blocks. The header
// then names the new table and width, and the old blocks and table are freed in the new counts.
//
// Crash order (qemu's own is not): the old structures first count the new clusters (raised
// refcounts, new old-width blocks hooked up, a grown old table switched to), then the new blocks
// (already without the freed old ones: nothing reads them before the switch) and the new table,
// then the caller's header write switches to them. A crash before the switch leaks clusters only.
import type { BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import type { Qcow2Header } from './header.ts';
import { readRefcount, writeRefcount } from './refcount-entry.ts';
import { PlanRefusal, RefcountModel, type RefcountBlock } from './refcount-update.ts';
import { allocClusters, freeClusters } from './allocator.ts';
import type { AmendProgress } from './amend-progress.ts';

/** qemu's QCOW_MAX_REFTABLE_SIZE. */
const MAX_TABLE_BYTES = 8 * 1024 * 1024;
/** Most bytes of new refcount blocks one plan holds. */
const MAX_NEW_BLOCK_BYTES = 256 * 1024 * 1024;
/**
 * Most bytes a plan may add past the end of the file beyond its own size: far more than new
 * refcount structures take; refcounts that claim clusters far past the end (a hostile image)
 * would otherwise have instar grow a huge sparse file.
 */
const MAX_GROWTH = 1024 * 1024 * 1024;

export type RefcountOrderPlan =
  /** `freeClusterIndex`: qemu's allocation hint afterwards (the old structures freed lower it). */
  | { steps: RepairStep[]; tableOffset: number; tableClusters: number; freeClusterIndex: number }
  /** qemu's error (it fails in its first pass; what it allocated is freed again). */
  | { error: string; steps: RepairStep[] };

/** The pass's work per finished new block: allocate it, or fill it. */
type BlockDone = (index: number, empty: boolean, block: Buffer | undefined) => void;

class WidthError extends Error {}

/** `freeClusterIndex`: where qemu's next allocation starts searching (0 after its open). */
export function planRefcountOrder(dev: BlockDevice, h: Qcow2Header, order: number, progress: AmendProgress, freeClusterIndex = 0): RefcountOrderPlan {
  const cs = h.clusterSize;
  const model = new RefcountModel(dev, h);
  model.freeClusterIndex = freeClusterIndex;
  const oldPer = model.perBlock;
  const bits = 2 ** order;
  const newPer = (cs * 8) / bits;
  /** The new refcount table (cluster offsets; 0 = no block) and its size in entries. */
  const table: number[] = [];
  let tableSize = 0;
  let blockCount = 0;
  let allocated = false;

  /** alloc_refblock: a cluster for each new block that counts something. */
  const allocate: BlockDone = (index, empty) => {
    if (empty) return;
    if (index >= tableSize) {
      tableSize = Math.ceil((index + 1) / (cs / 8)) * (cs / 8);
      if (tableSize * 8 > MAX_TABLE_BYTES) throw new WidthError('This operation would make the refcount table grow beyond the maximum size supported by QEMU, aborting');
    }
    if (!table[index]) {
      if ((blockCount + 1) * cs > MAX_NEW_BLOCK_BYTES) throw new PlanRefusal('its new refcount blocks would take too much memory; nothing was written');
      table[index] = allocClusters(model, cs);
      blockCount++;
      allocated = true;
    }
  };

  /**
   * walk_over_reftable: every refcount of the old table in order, new blocks of `newPer` entries
   * handed to `done` as they fill. A missing old block reads as zeros for the whole pass.
   */
  const walk = (done: BlockDone, fill: boolean, index: number, total: number): void => {
    // A block named twice is a corruption that would also multiply the walk's work.
    const seen = new Set<number>();
    let newIndex = 0;
    let entry = 0;
    let empty = true;
    let block = fill ? Buffer.alloc(cs) : undefined;
    const finish = () => {
      done(newIndex, empty, block);
      newIndex++;
      entry = 0;
      empty = true;
      if (fill) block = Buffer.alloc(cs);
    };
    for (let i = 0; i < model.tableSize; i++) {
      progress.report(index * model.tableSize + i, total * model.tableSize);
      const first = i * oldPer;
      const blockOffset = model.tableEntry(i);
      if (blockOffset !== 0 && seen.has(blockOffset)) throw new PlanRefusal(`instar refuses this qcow2 image: the refcount block at ${blockOffset} is named twice in the refcount table; nothing was written`);
      seen.add(blockOffset);
      if (!model.covered(first)) {
        for (let left = oldPer; left > 0;) {
          if (entry >= newPer) finish();
          const take = Math.min(left, newPer - entry);
          entry += take;
          left -= take;
        }
        continue;
      }
      for (let j = 0; j < oldPer; j++) {
        if (entry >= newPer) finish();
        const refcount = model.get(first + j);
        if (bits < 64 && refcount >= 2 ** bits) {
          const offset = (first + j) * cs;
          throw new WidthError(`Cannot decrease refcount entry width to ${bits} bits: Cluster at offset ${offset === 0 ? '0' : `0x${offset.toString(16)}`} has a refcount of ${refcount}`);
        }
        if (block) writeRefcount(block, entry, bits, refcount);
        entry++;
        if (refcount !== 0) empty = false;
      }
    }
    if (entry > 0) finish();
    progress.report((index + 1) * model.tableSize, total * model.tableSize);
  };

  let tableOffset = 0;
  let tableAllocated = 0;
  let walkIndex = 0;
  try {
    do {
      allocated = false;
      walk(allocate, false, walkIndex, Math.max(walkIndex + 2, 3));
      walkIndex++;
      if (allocated) {
        if (tableOffset) freeClusters(model, tableOffset, tableAllocated * 8);
        tableOffset = allocClusters(model, tableSize * 8);
        tableAllocated = tableSize;
      }
    } while (allocated);
  } catch (e) {
    if (!(e instanceof WidthError)) throw e;
    // qemu frees what it allocated (the old width still counts): only new old-width blocks stay.
    for (const offset of table) if (offset) freeClusters(model, offset, cs);
    if (tableOffset) freeClusters(model, tableOffset, tableSize * 8);
    return { error: e.message, steps: refcountSteps(dev, model) };
  }
  const blocks = new Map<number, Buffer>();
  walk((index, empty, block) => {
    if (table[index]) blocks.set(index, block!);
    else if (!empty) throw new PlanRefusal('internal error: a new refcount block counts clusters but has no place; nothing was written');
  }, true, walkIndex, walkIndex + 1);
  // After the switch qemu frees the old blocks and table, counted in the new width.
  let hint = model.freeClusterIndex;
  const free = (offset: number, length: number) => {
    for (let c = offset / cs; c < Math.ceil((offset + length) / cs); c++) {
      const block = blocks.get(Math.floor(c / newPer));
      const value = block ? readRefcount(block, c % newPer, bits) : 0;
      if (value === 0) throw new PlanRefusal(`instar refuses this qcow2 image: the old refcount structure at ${c * cs} is counted nowhere; nothing was written`);
      writeRefcount(block!, c % newPer, bits, typeof value === 'bigint' ? value - 1n : value - 1);
      if (value === 1 && c < hint) hint = c;
    }
  };
  const old = model.tableLocation;
  for (let i = 0; i < model.tableSize; i++) {
    const offset = model.tableEntry(i);
    if (offset) free(offset, cs);
  }
  free(old.offset, old.clusters * cs);
  const tableBytes = Buffer.alloc(tableSize * 8);
  table.forEach((offset, i) => offset && tableBytes.writeBigUInt64BE(BigInt(offset), i * 8));
  const newWrites: RepairStep[] = [...blocks].map(([index, bytes]) => ({ kind: 'write', pos: table[index], bytes }));
  newWrites.push({ kind: 'write', pos: tableOffset, bytes: tableBytes });
  const steps = refcountSteps(dev, model, newWrites);
  steps.push(...newWrites, { kind: 'barrier' });
  return { steps, tableOffset, tableClusters: (tableSize * 8) / cs, freeClusterIndex: hint };
}

/**
 * A refcount model's changes, crash ordered: the file grown to hold them and every step of
 * `later` (written after them by the caller), `early` (writes into clusters not yet in use),
 * raised refcounts, new blocks hooked up (a grown table switched to), lowered refcounts.
 */
export function refcountSteps(dev: BlockDevice, model: RefcountModel, later: readonly RepairStep[] = [], early: readonly RepairStep[] = []): RepairStep[] {
  const cs = model.clusterSize;
  const steps: RepairStep[] = [];
  const phase = (list: RepairStep[]) => {
    if (list.length > 0) steps.push(...list, { kind: 'barrier' });
  };
  let end = Math.max(model.end, dev.size);
  for (const s of [...later, ...early]) {
    if (s.kind === 'write') end = Math.max(end, s.pos + s.bytes.length);
    else if (s.kind === 'zero' || s.kind === 'fill') end = Math.max(end, s.pos + s.length);
  }
  if (end - dev.size > MAX_GROWTH + dev.size) throw new PlanRefusal(`instar refuses this qcow2 image: the amend would place clusters ${end - dev.size} bytes past the end of the file; nothing was written`);
  if (end > dev.size) phase([{ kind: 'truncate', size: end }]);
  phase([...early]);
  const retired = model.retiredClusters();
  const blocks = model.changedBlocks();
  const raised = (b: RefcountBlock) => {
    const out = Buffer.from(b.original);
    for (let i = 0; i < model.perBlock; i++) {
      const v = model.entry(b.current, i);
      if (v > model.entry(b.original, i)) model.setEntry(out, i, v);
    }
    return out;
  };
  phase(blocks.filter((b) => !retired.has(b.offset / cs)).map((b) => ({ kind: 'write', pos: b.offset, bytes: raised(b) })));
  phase(model.tableWrites('hooked').map((w): RepairStep => ({ kind: 'write', pos: w.pos, bytes: w.bytes })));
  phase(blocks.filter((b) => !b.current.equals(raised(b))).map((b) => ({ kind: 'write', pos: b.offset, bytes: b.current })));
  return steps;
}
