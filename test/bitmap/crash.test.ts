// Crash safety of qemu-img bitmap: the plan's writes are applied up to every possible point and
// stopped there, as if the process had died. After each prefix qemu-img check (7.2 and 10.0)
// must open the image and report at most leaked clusters (bitmaps may be left marked in use, or
// dropped as stale, as qemu's own crash would leave them); the guest-visible disk never changes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, openSync, writeFileSync } from 'node:fs';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { planBitmap } from '../../src/formats/qcow2/bitmap-plan.ts';
import type { BitmapActionSpec } from '../../src/formats/qcow2/bitmap-actions.ts';
import type { BlockDevice } from '../../src/formats/types.ts';
import { Workspace } from './harness.ts';
import { buildFixtures, type Fixtures } from './fixtures.ts';

const ws = new Workspace();
let files: Fixtures;
before(() => { files = buildFixtures(ws); });
after(() => ws.remove());

function withDevice<T>(file: string, fn: (dev: BlockDevice) => T): T {
  const fd = openSync(file, 'r+');
  try {
    return fn(new FdDevice(fd, true));
  } finally {
    closeSync(fd);
  }
}

/** qemu-img check's verdict on a crashed image: it opens, and reports leaks at worst. */
function assertRecoverable(file: string, what: string): void {
  for (const version of VERSIONS) {
    const r = runQemu(version, ['check', file], { timeoutMs: 20_000 });
    // qemu's own crash between its header and directory writes leaves the bitmaps stale: allowed.
    const bad = (r.stdout + r.stderr).split('\n').filter((l) => /^(ERROR|qemu-img:)/.test(l) && !l.startsWith('qemu-img: warning: a program lacking bitmap support'));
    assert.deepEqual(bad, [], `${what} (${version})`);
    assert.ok(r.status === 0 || r.status === 3, `${what} (${version}): check exit ${r.status}: ${r.stderr}`);
  }
}

const sameDisk = (a: string, b: string) => runQemu('10.0', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', a, b]).status === 0;

const CASES: [string, string, BitmapActionSpec[]][] = [
  ['data.qcow2', 'e', [{ kind: 'add' }]],
  ['data.qcow2', 'b', [{ kind: 'remove' }]],
  ['data.qcow2', 'd', [{ kind: 'merge', source: 'c' }, { kind: 'disable' }]],
  ['small.qcow2', 'b', [{ kind: 'merge', source: 'c' }, { kind: 'remove' }, { kind: 'add' }]],
  ['inuse.qcow2', 'c', [{ kind: 'clear' }]],
];

test('every prefix of a bitmap plan leaves an image qemu-img check accepts', () => {
  for (const [image, name, actions] of CASES) {
    const label = `${image} ${actions.map((a) => a.kind).join('+')} ${name}`;
    const source = ws.path(`crash-${image}`);
    writeFileSync(source, files[image]);
    const plan = withDevice(source, (dev) => planBitmap(dev, { name, actions, nodeName: '#block100' }));
    assert.equal(plan.error, undefined, label);
    const total = writeCount(plan.steps);
    assert.ok(total >= 4, `${label}: ${total} writes`);
    const crashed = ws.path(`crashed-${image}`);
    for (let k = 0; k <= total; k++) {
      copyFileSync(source, crashed);
      withDevice(crashed, (dev) => applyRepair(dev, plan.steps, { stopAfterWrites: k }));
      assertRecoverable(crashed, `${label} after ${k} of ${total} writes`);
      if (k === 0 || k === total || k % 3 === 0) assert.ok(sameDisk(source, crashed), `${label} after ${k} writes: the disk reads as before`);
    }
  }
});
