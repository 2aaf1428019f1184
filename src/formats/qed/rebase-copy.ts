// Safe rebase's copy into a QED top: qemu-img's write requests (rebase-safe.ts) as qemu's qed
// driver carries them out. The allocation is the writer's (writer.ts: per request and L2 table,
// the data clusters at the end of the file, then a new L2 table after them; whole-cluster zero
// requests become zero entries), run over the image's own tables without writing anything. The
// bytes then follow from one fact: every request lies where the top allocates nothing, and a
// cluster it allocates ends up holding what the old backing chain shows there, whole (qemu fills
// what a request leaves of the cluster from the backing file, which is still the old one; zeros
// past its end, as the requests' own zeros). So each new cluster is filled from the old chain.
//
// Order, for crashes: the file grown, the data, then the L2 tables (new ones whole, changed ones
// by the sectors holding the changed entries, as qemu writes them), then the L1 entries; each
// group durable before the next. A crash leaves clusters nothing points at yet, which qemu-img
// opens (check calls them leaks). qemu marks the image need-check around its writes only without
// a backing file, where it skips its flushes; instar's barriers make that mark unnecessary.
import { ImageError, type BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { F_NEED_CHECK, readQedHeader, tableEntries } from './header.ts';
import { readQedTables } from './tables.ts';
import { QedWriter } from './writer.ts';

/** One of qemu-img rebase's write requests: the old chain's bytes, or zeros (write-zeroes). */
export interface CopyRequest {
  offset: number;
  length: number;
  zero: boolean;
}

/** Reads the old backing chain's bytes (zeros past its end) at a guest offset. */
export type OldContent = (buf: Uint8Array, offset: number) => void;

const ZERO_CLUSTER = 1n;
const SECTOR = 512;
/** Most bytes one fill step writes. */
const MAX_FILL = 4 * 1024 * 1024;

interface NewCluster {
  host: number;
  guest: number;
}

export function planQedRebaseCopy(dev: BlockDevice, requests: readonly CopyRequest[], oldContent: OldContent): RepairStep[] | { refused: string } {
  if (requests.length === 0) return [];
  const refused = (why: string) => ({ refused: `instar cannot copy into this qed image (${why}); nothing was written` });
  const h = readQedHeader(dev);
  if (h.features & F_NEED_CHECK) return refused('it needs a check, which qemu would run and repair first');
  const state = readQedTables(dev, h);
  if ('problem' in state) return refused(state.problem);
  const l1Before = Buffer.from(state.l1);
  const l2Before = new Map([...state.l2].map(([i, t]) => [i, Buffer.from(t)]));
  // The writer allocates as qemu's driver does; its writes go nowhere (the bytes come below).
  const nowhere: BlockDevice = { size: dev.size, read: () => 0, write: () => undefined };
  const writer = new QedWriter({ image: nowhere, extents: [] }, { size: Number(h.imageSize), clusterSize: h.clusterSize, tableSize: h.tableSize }, state);
  const zeros = new Uint8Array(Math.max(...requests.map((r) => r.length)));
  for (const r of requests) {
    if (r.zero) writer.writeZeroes(r.offset, r.length);
    else writer.write(zeros.subarray(0, r.length), r.offset);
  }
  const after = writer.tables();
  const entries = tableEntries(h);
  const fresh: NewCluster[] = [];
  const tableSteps: RepairStep[] = [];
  for (const [index, table] of after.l2) {
    const before = l2Before.get(index);
    const changed = changedEntries(table, before, (e, was, now) => {
      if (now === ZERO_CLUSTER && was === 0n) return;
      if (now > ZERO_CLUSTER && was <= ZERO_CLUSTER) fresh.push({ host: Number(now), guest: (index * entries + e) * h.clusterSize });
      else throw new ImageError('instar refuses a qed copy that would change an allocated cluster');
    });
    const at = Number(after.l1.readBigUInt64LE(index * 8));
    if (!before) tableSteps.push({ kind: 'write', pos: at, bytes: table });
    else if (changed) tableSteps.push(sectorsOf(table, at, changed));
  }
  const l1Changed = changedEntries(after.l1, l1Before, () => undefined);
  const steps: RepairStep[] = [];
  if (after.fileEnd > dev.size) steps.push({ kind: 'truncate', size: after.fileEnd });
  steps.push(...fillSteps(fresh, h.clusterSize, oldContent), { kind: 'barrier' });
  steps.push(...tableSteps, { kind: 'barrier' });
  if (l1Changed) steps.push(sectorsOf(after.l1, after.l1Offset, l1Changed), { kind: 'barrier' });
  return steps;
}

/** The first and last entry that differ (each reported to `each`), or undefined when none does. */
function changedEntries(now: Buffer, was: Buffer | undefined, each: (entry: number, was: bigint, now: bigint) => void): [number, number] | undefined {
  let range: [number, number] | undefined;
  for (let e = 0; e < now.length / 8; e++) {
    const a = was ? was.readBigUInt64LE(e * 8) : 0n;
    const b = now.readBigUInt64LE(e * 8);
    if (a === b) continue;
    each(e, a, b);
    range = range ? [range[0], e] : [e, e];
  }
  return range;
}

/** qed_write_table: the whole sectors holding entries first..last. */
function sectorsOf(table: Buffer, tableAt: number, [first, last]: [number, number]): RepairStep {
  const start = Math.floor((first * 8) / SECTOR) * SECTOR;
  const end = Math.ceil(((last + 1) * 8) / SECTOR) * SECTOR;
  return { kind: 'write', pos: tableAt + start, bytes: table.subarray(start, end) };
}

/** The new clusters filled from the old chain, neighbours in the file and on the disk joined. */
function fillSteps(fresh: NewCluster[], cs: number, oldContent: OldContent): RepairStep[] {
  fresh.sort((a, b) => a.host - b.host);
  const steps: RepairStep[] = [];
  for (let i = 0; i < fresh.length;) {
    const { host, guest } = fresh[i];
    let j = i + 1;
    while (j < fresh.length && fresh[j].host === host + (j - i) * cs && fresh[j].guest === guest + (j - i) * cs && (j - i + 1) * cs <= MAX_FILL) j++;
    steps.push({ kind: 'fill', pos: host, length: (j - i) * cs, fill: (buf) => oldContent(buf, guest) });
    i = j;
  }
  return steps;
}
