// A crash between the guest's last write and the host's punching: the plan applied on the guest's
// deferring device (freed ranges held, never punched nor zeroed) must leave an image qemu-img
// 7.2 and 10.0 check clean, whose disk reads as qemu's result; and punching exactly the ranges the
// device hands over must give qemu's bytes. Covers check -r (leaks, a rebuild), resize --shrink
// and snapshot -d. (Each crash prefix before that is covered by the commands' own crash tests.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { RepairDirs } from '../check/repair-harness.ts';
import { setRefcount16 } from '../check/qcow2-edit.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { applyRepair, type RepairStep } from '../../src/formats/repair.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { checkQcow2 } from '../../src/formats/qcow2/check.ts';
import { repairQcow2 } from '../../src/formats/qcow2/repair-refcounts.ts';
import { qcow2Resize } from '../../src/formats/qcow2/resize.ts';
import { planDelete } from '../../src/formats/qcow2/snapshot-plan.ts';
import { emptyReport, type Checker } from '../../src/formats/check-types.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;
const path = (name: string) => join(dirs.root, name);

/** qemu-img commands on a file made by qemu-img create (qemu-io for `-c` lists). */
function qemu(...commands: string[][]): void {
  for (const c of commands) {
    const io = c[0] === '-c';
    const r = runQemu('10.0', c, {}, io ? 'qemu-io' : 'qemu-img');
    assert.equal(r.status, 0, r.stderr);
  }
}

function leaky(name: string, refcounts: [number, number][]): void {
  qemu(['create', '-q', '-f', 'qcow2', path(name), '10M'], ['-c', 'write -P 5 0 200k', path(name)]);
  truncateSync(path(name), 13 * CLUSTER);
  const fd = openSync(path(name), 'r+');
  for (const c of [9, 11]) writeSync(fd, Buffer.alloc(CLUSTER, 0x77), 0, CLUSTER, c * CLUSTER);
  closeSync(fd);
  for (const [cluster, value] of refcounts) setRefcount16(path(name), cluster, value);
}

before(() => {
  leaky('leaks.qcow2', [[9, 1], [10, 1], [11, 1]]);
  leaky('rebuild.qcow2', [[6, 0], [9, 1]]);
  qemu(['create', '-q', '-f', 'qcow2', path('shrink.qcow2'), '10M'], ['-c', 'write -P 5 0 1M', '-c', 'write -P 6 8M 1M', '-c', 'write -P 7 1M 1M', path('shrink.qcow2')]);
  qemu(['create', '-q', '-f', 'qcow2', path('snap.qcow2'), '10M'], ['-c', 'write -P 5 0 1M', path('snap.qcow2')], ['snapshot', '-c', 's1', path('snap.qcow2')], ['-c', 'write -P 6 0 512k', path('snap.qcow2')]);
});
after(() => dirs.remove());

type Planner = (dev: FdDevice) => RepairStep[];

const PLANS: { name: string; image: string; qemuArgs: string[]; plan: Planner }[] = [
  {
    name: 'check -r all (leaks)', image: 'leaks.qcow2', qemuArgs: ['check', '-r', 'all'],
    plan: (dev) => repairSteps(dev),
  },
  {
    name: 'check -r all (rebuild)', image: 'rebuild.qcow2', qemuArgs: ['check', '-r', 'all'],
    plan: (dev) => repairSteps(dev),
  },
  {
    name: 'resize --shrink', image: 'shrink.qcow2', qemuArgs: ['resize', '--shrink', '-f', 'qcow2', '@', '4M'],
    plan: (dev) => {
      const plan = qcow2Resize.plan(qcow2Driver.open(dev, { writable: true, readsData: true }), dev, { newSize: 4 * 2 ** 20, preallocation: 'off' });
      assert.ok('steps' in plan);
      return plan.steps;
    },
  },
  {
    name: 'snapshot -d', image: 'snap.qcow2', qemuArgs: ['snapshot', '-d', 's1'],
    plan: (dev) => {
      const plan = planDelete(dev, 's1');
      assert.ok(plan);
      return plan.steps;
    },
  },
];

/** check -r all's plan (no bitmaps here, so no close steps). */
function repairSteps(dev: FdDevice): RepairStep[] {
  const image = qcow2Driver.open(dev, { writable: true, check: true });
  const report = emptyReport();
  const checker: Checker = checkQcow2;
  checker(image, dev, report, { qemuMajor: 10 });
  const plan = repairQcow2(image, dev, report, 'all', { qemuMajor: 10 });
  assert.ok('steps' in plan && !plan.close);
  return plan.steps;
}

for (const { name, image, qemuArgs, plan } of PLANS) {
  test(`freed ranges not yet punched: ${name}`, () => {
    const source = path(image);
    const theirs = path(`${image}.qemu`);
    copyFileSync(source, theirs);
    const args = qemuArgs.includes('@') ? qemuArgs.map((a) => (a === '@' ? theirs : a)) : [...qemuArgs, theirs];
    assert.equal(runQemu('10.0', args).status, 0);

    const ours = path(`${image}.cut`);
    copyFileSync(source, ours);
    const fd = openSync(ours, 'r+');
    let freed: [number, number, number][];
    try {
      const dev = new FdDevice(fd, true, undefined, true);
      applyRepair(dev, plan(dev));
      freed = dev.discarded!();
    } finally {
      closeSync(fd);
    }
    assert.ok(freed.length > 0, 'the plan freed clusters');
    for (const v of VERSIONS) assert.equal(runQemu(v, ['check', ours]).status, 0, `qemu-img ${v} check before the punch`);
    assert.equal(runQemu('10.0', ['compare', '-q', ours, theirs]).status, 0, 'the disk reads as qemu left it');

    // Punched (zeros here): qemu's bytes exactly.
    const bytes = readFileSync(ours);
    for (const [pos, length] of freed) bytes.fill(0, pos, pos + length);
    writeFileSync(ours, bytes);
    assert.ok(bytes.equals(readFileSync(theirs)), 'with the freed ranges zeroed, qemu\'s bytes');
  });
}
