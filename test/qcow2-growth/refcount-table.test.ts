// Refcount table growth (RefcountModel over qemu's alloc_refcount_block → qcow2_refcount_area):
// with 512-byte clusters one refcount table cluster covers 8 MiB, so an image holding ~8 MiB has a
// full table and the next allocation grows it. snapshot -c, resize (with and without metadata
// preallocation, which grows it several times) and commit must leave files byte-identical to
// qemu-img 7.2's and 10.0's (snapshot dates aside), and every sampled prefix of instar's writes
// must leave an image qemu-img checks with leaks at most (all prefixes in the long tier).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { LONG, longTest } from '../helpers/long.ts';
import { commitOp } from '../../src/ops/commit.ts';
import { PairRunner, onCopy, plannedResize } from './pair.ts';
import { assertSameRun } from '../check/repair-harness.ts';
import { buildImage, maskSnapshotDates } from '../snapshot/harness.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { planCreate } from '../../src/formats/qcow2/snapshot-plan.ts';
import { applyRepair, writeCount, type RepairStep } from '../../src/formats/repair.ts';

const dirs = new PairRunner();
let full: Uint8Array;
let base: Uint8Array;
let top: Uint8Array;
/** refcount_table_offset and refcount_table_clusters of the full image. */
let reftable: string;

const reftableFields = (b: Uint8Array) => Buffer.from(b).subarray(48, 60).toString('hex');

before(() => {
  // 8026 KiB of data in 512-byte clusters: the one-cluster refcount table has no free entry left.
  full = buildImage(dirs.root, 'full.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512', '16M'], ['write -P 0x5a 0 8026k']);
  reftable = reftableFields(full);
  const chain = join(dirs.root, 'chain');
  mkdirSync(chain);
  // The base is the full image itself (its bytes under the name the top names).
  base = full;
  writeFileSync(join(chain, 'b.qcow2'), base);
  top = buildImage(chain, 't.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512', '-b', 'b.qcow2', '-F', 'qcow2', '16M'], ['write -P 0x33 8M 20k']);
});
after(() => dirs.remove());

/** Runs `args` on copies of the full image and asserts the same output and file, and a growth. */
async function same(version: OracleVersion, args: string[], opts: { sandboxed?: boolean; dates?: boolean } = {}): Promise<void> {
  const r = await dirs.run(version, { 'full.qcow2': full }, args, opts);
  const what = `${version} ${args.join(' ')}`;
  assertSameRun(r, what);
  assert.equal(r.qemu.status, 0, `${what}: ${r.qemu.stderr}`);
  const [q, i] = [r.qemuFiles['full.qcow2'], r.instarFiles['full.qcow2']];
  assert.notEqual(reftableFields(q), reftable, `${what}: qemu grew the refcount table`);
  const mask = opts.dates ? maskSnapshotDates : (b: Buffer) => b;
  assert.ok(mask(i).equals(mask(q)), `${what}: instar's file differs from qemu-img's`);
}

for (const version of VERSIONS) {
  test(`${version}: snapshot -c and resize grow a full refcount table as qemu-img does`, async () => {
    await same(version, ['snapshot', '-c', 's1', 'full.qcow2'], { dates: true });
    await same(version, ['resize', 'full.qcow2', '64M']);
    // Preallocating 8 MiB of 512-byte clusters grows the table twice.
    await same(version, ['resize', '--preallocation=metadata', 'full.qcow2', '24M']);
  });

  test(`${version}: commit into a base with a full refcount table grows it as qemu-img does`, async () => {
    const r = await dirs.run(version, { 'b.qcow2': base, 't.qcow2': top }, ['commit', 't.qcow2']);
    assertSameRun(r, `${version} commit`);
    const q = r.qemuFiles['b.qcow2'];
    assert.notEqual(reftableFields(q), reftableFields(base), 'qemu grew the base\'s refcount table');
    assert.ok(r.instarFiles['b.qcow2'].equals(q), 'the committed base is qemu-img\'s, byte for byte');
    assert.ok(r.instarFiles['t.qcow2'].equals(r.qemuFiles['t.qcow2']), 'the emptied top is qemu-img\'s');
  });
}

test('10.0 through the sandbox: snapshot -c grows a full refcount table as qemu-img does', async () => {
  await same('10.0', ['snapshot', '-c', 's1', 'full.qcow2'], { sandboxed: true, dates: true });
});

/**
 * The prefixes to crash at: in the long tier all; else every 80th and each prefix within two
 * writes of the refcount table's growth (the new table, the header switch, what follows).
 */
function prefixes(steps: RepairStep[]): number[] {
  const writes = steps.filter((s) => s.kind !== 'barrier');
  const total = writes.length;
  if (LONG) return Array.from({ length: total + 1 }, (_, k) => k);
  const picked = new Set<number>([0, total]);
  for (let k = 0; k <= total; k += 80) picked.add(k);
  writes.forEach((s, k) => {
    if (s.kind === 'write' && s.pos === 48 && s.bytes.length === 12) for (let d = -2; d <= 2; d++) if (k + d >= 0 && k + d <= total) picked.add(k + d);
  });
  return [...picked].sort((a, b) => a - b);
}

function crashAtPrefixes(label: string, plan: (dev: FdDevice) => RepairStep[]): void {
  const path = join(dirs.root, `${label}.qcow2`);
  // Planned once: the plan is data (writes and truncates), applied to a fresh copy per prefix.
  const steps = onCopy(full, path, plan);
  assert.ok(steps.some((s) => s.kind === 'write' && s.pos === 48 && s.bytes.length === 12), `${label}: the plan switches refcount tables`);
  for (const k of prefixes(steps)) {
    onCopy(full, path, (dev) => applyRepair(dev, steps, { stopAfterWrites: k }));
    assertOnlyHarmless(path, `${label} after ${k} of ${writeCount(steps)} writes`);
  }
}

/**
 * What qemu-img check may say about a crashed image: leaked clusters, and COPIED flags cleared on
 * clusters used once (snapshot -c clears them before it raises refcounts; qemu copies such a
 * cluster before writing it, harmlessly). Anything else, or an image it cannot open, fails.
 */
function assertOnlyHarmless(path: string, what: string): void {
  const r = runQemu('10.0', ['check', path], { timeoutMs: 20_000 });
  const lines = (r.stdout + r.stderr).split('\n').filter((l) => /^(ERROR|Leaked|Warning|qemu-img:)/.test(l));
  for (const l of lines) assert.match(l, /^Leaked cluster \d+ |^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=1$/, `${what}: ${l}`);
  assert.ok([0, 2, 3].includes(r.status ?? -1), `${what}: check exits ${r.status}: ${r.stderr}`);
}

test('crash safety: every sampled prefix of a growing snapshot -c and resize leaves leaks at most', () => {
  crashAtPrefixes('snapshot', (dev) => {
    const plan = planCreate(dev, 'crash', { sec: 1_700_000_000, nsec: 0 });
    assert.ok(plan, 'a snapshot plan');
    return plan.steps;
  });
  crashAtPrefixes('resize-prealloc', (dev) => plannedResize(dev, 20 * 2 ** 20, 'metadata'));
});

// Long tier: commit into the full base stopped after every write (the data may land where the
// old refcount table was: it is written after the switch to the new one).
longTest('crash safety: every prefix of a commit that grows the base\'s refcount table leaves leaks at most', () => {
  const dir = join(dirs.root, 'commit-crash');
  mkdirSync(dir);
  const run = (writes: number) => {
    writeFileSync(join(dir, 'b.qcow2'), base);
    writeFileSync(join(dir, 't.qcow2'), top);
    const [t, b] = ['t.qcow2', 'b.qcow2'].map((n) => openSync(join(dir, n), 'r+'));
    try {
      const ctx = {
        devices: [
          { spec: { fd: t, role: 'input' as const, writable: true }, dev: new FdDevice(t, true) },
          { spec: { fd: b, role: 'backing' as const, writable: true, name: 'b.qcow2', referrer: 0 }, dev: new FdDevice(b, true) },
        ],
        emit: () => undefined,
      };
      return commitOp({ format: 'qcow2', fileName: 't.qcow2', stopAfterWrites: writes }, ctx);
    } finally {
      closeSync(t);
      closeSync(b);
    }
  };
  run(Infinity);
  const final = ['b.qcow2', 't.qcow2'].map((n) => readFileSync(join(dir, n)));
  assert.notEqual(reftableFields(final[0]), reftableFields(base), 'the commit grows the base\'s refcount table');
  // Prefixes until one leaves both files as the whole commit does (stopAfterWrites is silent).
  for (let k = 0; k < 200; k++) {
    run(k);
    const r = runQemu('10.0', ['check', join(dir, 'b.qcow2')], { timeoutMs: 20_000 });
    assert.ok(r.status === 0 || r.status === 3, `after ${k} writes: check exits ${r.status}: ${r.stdout}${r.stderr}`);
    if (['b.qcow2', 't.qcow2'].every((n, i) => readFileSync(join(dir, n)).equals(final[i]))) {
      assert.ok(k > 5, `only ${k} writes`);
      return;
    }
  }
  assert.fail('the commit did not finish within 200 writes');
});
