// check -r for qcow2, leaked clusters only (qemu's compare_refcounts in fix mode): every cluster
// whose stored refcount exceeds its references gets the references as its refcount, reported with
// qemu's "Repairing cluster" line; a cluster freed this way is discarded by qemu (a hole punched),
// which instar, unable to punch holes from its sandbox, matches by writing zeros over it.
//
// Anything else the check found (refcounts below the references, bad tables or flags, unreadable
// refcounts) needs qemu's other repairs or its refcount rebuild: instar refuses the image, writing
// nothing. So it does for images whose writable open qemu would also change (dirty or corrupt
// bits, persistent bitmaps, an external data file).
import { addLine, type RepairPlan, type RepairPlanner } from '../check-types.ts';
import type { RepairStep } from '../repair.ts';
import { AUTOCLEAR, INCOMPAT, parseHeader } from './header.ts';
import { StoredRefcounts } from './check-refcounts.ts';
import { readAt } from '../bytes.ts';
import { writeRefcount } from './refcount-entry.ts';
import type { BlockDevice } from '../types.ts';

/** Most bytes of refcount blocks one repair holds in memory before writing them. */
const MAX_HELD_BYTES = 256 * 1024 * 1024;

const refused = (why: string): RepairPlan => ({ refused: `instar cannot repair this qcow2 image (${why}); nothing was written` });

export const repairQcow2: RepairPlanner = (_image, dev: BlockDevice, report): RepairPlan => {
  const h = parseHeader(dev);
  if (report.corruptions || report['check-errors']) return refused('it has corruptions, which need qemu\'s refcount rebuild or table repairs');
  if (report.omitted) return refused('the check reported too many lines');
  if (h.incompatible & (INCOMPAT.dirty | INCOMPAT.corrupt)) return refused('its dirty or corrupt bit is set');
  if (h.incompatible & INCOMPAT.dataFile) return refused('it has an external data file');
  if (h.autoclear & AUTOCLEAR.bitmaps) return refused('it has persistent bitmaps');
  const leakRuns = report.lines.filter((l): l is [0, number, number, string, string] => Array.isArray(l) && l[0] === 0);
  if (leakRuns.length === 0) return { steps: [] };
  const stored = new StoredRefcounts(dev, h);
  const bits = 2 ** h.refcountOrder;
  const cs = h.clusterSize;
  const blocks = new Map<number, { offset: number; bytes: Buffer }>();
  // Runs of freed clusters, [first, end): a leak report may name millions of clusters.
  const freed: [number, number][] = [];
  for (const [, first, count, refcount, reference] of leakRuns) {
    const value = BigInt(reference);
    for (let cluster = first; cluster < first + count; cluster++) {
      const index = Math.floor(cluster / stored.perBlockCount);
      let block = blocks.get(index);
      if (!block) {
        if ((blocks.size + 1) * cs > MAX_HELD_BYTES) return refused('its leaks span too many refcount blocks');
        // The check read a refcount above zero here: the block is present, aligned and readable.
        const offset = Number(stored.entryOffset(index));
        block = { offset, bytes: readAt(dev, offset, cs) };
        blocks.set(index, block);
      }
      writeRefcount(block.bytes, cluster % stored.perBlockCount, bits, value);
      if (value !== 0n) continue;
      const last = freed.at(-1);
      if (last && last[1] === cluster) last[1]++;
      else freed.push([cluster, cluster + 1]);
    }
    addLine(report, [3, first, count, refcount, reference]);
    report.leaks -= count;
    report['leaks-fixed'] += count;
  }
  // The refcounts first, then the freed clusters' contents (qemu's discards come after its updates).
  const steps: RepairStep[] = [...blocks.values()].map((b) => ({ kind: 'write', pos: b.offset, bytes: b.bytes }));
  steps.push({ kind: 'barrier' });
  for (const [first, end] of freed) {
    const pos = first * cs;
    if (pos < dev.size) steps.push({ kind: 'zero', pos, length: Math.min((end - first) * cs, dev.size - pos) });
  }
  steps.push({ kind: 'barrier' });
  return { steps };
};
