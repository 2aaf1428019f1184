// Crash safety of snapshot -c/-d/-a: the planner's steps are applied up to every possible write
// and stopped there, as if the process had died. After each prefix qemu-img 10.0 must open the
// image and its check may report leaked clusters, or COPIED flags cleared on clusters used once
// (harmless: qemu copies such a cluster before writing it), but nothing else; the guest-visible
// disk must read as before the operation or as after it. Hostile images are refused before any
// write, through the planners and through the CLI.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu, runInstar } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { planApply, planCreate, planDelete, type SnapshotPlan } from '../../src/formats/qcow2/snapshot-plan.ts';
import { PlanRefusal } from '../../src/formats/qcow2/refcount-update.ts';
import { ImageError, type BlockDevice } from '../../src/formats/types.ts';
import { PairDirs, buildImage } from './harness.ts';

const dirs = new PairDirs();
const base: Record<string, string> = {};
const NOW = { sec: 1_700_000_000, nsec: 5000 };

before(() => {
  const path = (name: string) => join(dirs.root, name);
  buildImage(dirs.root, 'data.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=4096', '2M'], ['write -P 1 0 8k', 'write -P 2 1M 4k', 'write -z 1536k 4k']);
  base.data = path('data.qcow2');
  // Two snapshots and writes after them: delete and apply change shared and private clusters.
  copyFileSync(base.data, path('snaps.qcow2'));
  assert.equal(runQemu('7.2', ['snapshot', '-c', 'one', path('snaps.qcow2')]).status, 0);
  assert.equal(runQemu('7.2', ['-f', 'qcow2', '-c', 'write -P 3 0 4k', '-c', 'write -P 4 1792k 4k', path('snaps.qcow2')], {}, 'qemu-io').status, 0);
  assert.equal(runQemu('7.2', ['snapshot', '-c', 'two', path('snaps.qcow2')]).status, 0);
  assert.equal(runQemu('7.2', ['-f', 'qcow2', '-c', 'write -P 5 4k 4k', path('snaps.qcow2')], {}, 'qemu-io').status, 0);
  base.snaps = path('snaps.qcow2');
  // New clusters past the last refcount block's range: create allocates a refcount block.
  buildImage(dirs.root, 'edge.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64', '1M'], ['write -P 9 0 29k']);
  base.edge = path('edge.qcow2');
});
after(() => dirs.remove());

/** Opens a file as the guest's writable device, grown as the op grows it before applying. */
function withDevice<T>(file: string, fn: (dev: BlockDevice) => T): T {
  const fd = openSync(file, 'r+');
  try {
    return fn(new FdDevice(fd, true));
  } finally {
    closeSync(fd);
  }
}

function applyPrefix(file: string, plan: SnapshotPlan, writes: number): void {
  withDevice(file, (dev) => applyRepair(dev, plan.steps, { stopAfterWrites: writes }));
}

/** What qemu-img check may say about a crashed image: leaks, and COPIED cleared where refcount is 1. */
function assertOnlyHarmless(file: string, what: string): void {
  const r = runQemu('10.0', ['check', file], { timeoutMs: 20_000 });
  const lines = (r.stdout + r.stderr).split('\n').filter((l) => /^(ERROR|Leaked|Warning|qemu-img:)/.test(l));
  for (const l of lines) assert.match(l, /^Leaked cluster \d+ |^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=1$/, `${what}: ${l}`);
  assert.ok([0, 2, 3].includes(r.status ?? -1), `${what}: check exit ${r.status}: ${r.stderr}`);
}

const sameDisk = (a: string, b: string) => runQemu('10.0', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', a, b]).status === 0;

function crashEveryPrefix(label: string, source: string, plan: (dev: BlockDevice) => SnapshotPlan | undefined): void {
  const planned = withDevice(source, (dev) => plan(dev));
  assert.ok(planned, `${label}: a plan`);
  const total = writeCount(planned.steps);
  assert.ok(total >= 3, `${label}: ${total} writes`);
  const finished = join(dirs.root, `${label}-done.qcow2`);
  copyFileSync(source, finished);
  applyPrefix(finished, planned, Infinity);
  assertOnlyHarmless(finished, `${label} complete`);
  const crashed = join(dirs.root, `${label}-crash.qcow2`);
  for (let k = 0; k < total; k++) {
    copyFileSync(source, crashed);
    applyPrefix(crashed, planned, k);
    assertOnlyHarmless(crashed, `${label} after ${k} of ${total} writes`);
    assert.ok(sameDisk(source, crashed) || sameDisk(finished, crashed), `${label} after ${k} writes: the disk reads as before or as after`);
  }
}

test('create: every prefix of its writes leaves a usable image', () => {
  crashEveryPrefix('create', base.data, (dev) => planCreate(dev, 'new', NOW));
  crashEveryPrefix('create-more', base.snaps, (dev) => planCreate(dev, 'three', NOW));
  crashEveryPrefix('create-refblock', base.edge, (dev) => planCreate(dev, 'new', NOW));
});

test('delete: every prefix of its writes leaves a usable image', () => {
  crashEveryPrefix('delete-first', base.snaps, (dev) => planDelete(dev, 'one'));
  crashEveryPrefix('delete-last', base.snaps, (dev) => planDelete(dev, 'two'));
});

test('apply: every prefix of its writes leaves a usable image', () => {
  crashEveryPrefix('apply', base.snaps, (dev) => planApply(dev, 'one'));
});

/** Patches bytes of a copy of `source` at `at`. */
function patched(source: string, name: string, at: number, bytes: Buffer): string {
  const b = readFileSync(source);
  bytes.copy(b, at);
  const file = join(dirs.root, name);
  writeFileSync(file, b);
  return file;
}

test('hostile images are refused before anything is written', () => {
  const image = readFileSync(base.snaps);
  const l1 = Number(image.readBigUInt64BE(40));
  const reftable = Number(image.readBigUInt64BE(48));
  const table = Number(image.readBigUInt64BE(64));
  const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(v); return b; };
  const l2 = Number(image.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  const cases: [string, string, (dev: BlockDevice) => unknown, RegExp][] = [
    ['unaligned L2 table', patched(base.snaps, 'h1.qcow2', l1, u64(BigInt(l2 + 512) | (1n << 63n))), (dev) => planCreate(dev, 'x', NOW), /invalid L2 table offset/],
    ['L2 table past the end', patched(base.snaps, 'h2.qcow2', l1, u64(1n << 40n)), (dev) => planCreate(dev, 'x', NOW), /past the end of the file/],
    ['data cluster far past the end', patched(base.snaps, 'h3.qcow2', l2, u64((1n << 63n) | (1n << 45n))), (dev) => planCreate(dev, 'x', NOW), /refcount block/],
    ['refcount block past the end', patched(base.snaps, 'h4.qcow2', reftable, u64(1n << 40n)), (dev) => planCreate(dev, 'x', NOW), /refcount block at 0x10000000000 is invalid/],
    ['snapshot L1 table unaligned', patched(base.snaps, 'h5.qcow2', table, u64(4097n)), (dev) => planDelete(dev, 'one'), /Snapshot L1 table offset invalid/],
    ['snapshot L1 table too large', patched(base.snaps, 'h6.qcow2', table + 8, Buffer.from([0x7f, 0xff, 0xff, 0xff])), (dev) => planApply(dev, 'one'), /Snapshot L1 table too large/],
  ];
  // Refcounts that claim every cluster up to 240 MiB: qemu would put the new L1 table there.
  const full = Buffer.concat([readFileSync(base.snaps), Buffer.alloc(4096, 0)]);
  const fullBlock = full.length - 4096;
  for (let i = 0; i < 2048; i++) full.writeUInt16BE(1, fullBlock + i * 2);
  const block0 = Number(full.readBigUInt64BE(reftable));
  for (let i = 0; i < 2048; i++) if (full.readUInt16BE(block0 + i * 2) === 0) full.writeUInt16BE(1, block0 + i * 2);
  for (let i = 1; i < 30; i++) full.writeBigUInt64BE(BigInt(fullBlock), reftable + i * 8);
  writeFileSync(join(dirs.root, 'h7.qcow2'), full);
  cases.push(['refcounts claiming clusters far past the end', join(dirs.root, 'h7.qcow2'), (dev) => planCreate(dev, 'x', NOW), /place new clusters \d+ bytes past the end/]);
  for (const [what, file, plan, message] of cases) {
    const before = readFileSync(file);
    assert.throws(() => withDevice(file, plan), (e: unknown) => e instanceof ImageError && message.test(e.message), what);
    assert.ok(readFileSync(file).equals(before), `${what}: nothing written`);
  }
  assert.throws(() => withDevice(join(dirs.root, 'h3.qcow2'), (dev) => planCreate(dev, 'x', NOW)), PlanRefusal);
});

test('a hostile image through the CLI and the real sandbox: one line, exit 1, nothing written', () => {
  const file = join(dirs.root, 'h1.qcow2');
  const before = readFileSync(file);
  const r = runInstar(['snapshot', '-c', 'x', file]);
  assert.equal(r.status, 1);
  assert.equal(r.stderr, 'qemu-img: instar refuses this qcow2 image: L1 entry 0 points at an invalid L2 table offset; nothing was written\n');
  assert.ok(readFileSync(file).equals(before));
});
