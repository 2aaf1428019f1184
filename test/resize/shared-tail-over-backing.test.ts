// qcow2 grow under a longer backing file from a size inside a cluster that an internal snapshot
// shares, or that is preallocated as zeros: qemu's explicit-zeros head write copies a shared
// cluster to a new one (the guest's bytes before the old end, then zeros) and drops the active
// disk's reference on the old one; a preallocated zero cluster the image owns is written whole in
// place and stops being a zero cluster. instar refused both (found by the mutating hunt, campaign
// 8010000). Files byte-identical to qemu-img 7.2's and 10.0's; every prefix of the shared case's
// writes leaves an image qemu-img checks with leaks at most, whose disk and snapshot read as before.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { ResizeDirs, assertSameResize } from './harness.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qcow2Resize } from '../../src/formats/qcow2/resize.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { onCopy } from '../qcow2-growth/pair.ts';

const dirs = new ResizeDirs();
const images: Record<string, Uint8Array> = {};
let base: Uint8Array;

function qemu(args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): void {
  const r = runQemu('7.2', args, { cwd: dirs.root }, tool);
  assert.equal(r.status, 0, r.stderr);
}

before(() => {
  qemu(['create', '-q', '-f', 'qcow2', 'base.qcow2', '8M']);
  qemu(['-c', 'write -P 9 0 8M', 'base.qcow2'], 'qemu-io');
  base = readFileSync(dirs.path('base.qcow2'));
  const overlay = (name: string, writes: string[], snapshot: boolean) => {
    qemu(['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', name, '1000000']);
    qemu([...writes.flatMap((w) => ['-c', w]), name], 'qemu-io');
    if (snapshot) qemu(['snapshot', '-c', 's1', name]);
    return readFileSync(dirs.path(name));
  };
  images.sharedData = overlay('data.qcow2', ['write -P 1 960k 8k'], true);
  images.sharedZero = overlay('zero.qcow2', ['write -z 960k 17408'], true);
  // A preallocated zero cluster at the end (the image made without a backing file, then given one).
  qemu(['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', 'prealloc.qcow2', '1000000']);
  qemu(['-c', 'write -P 1 960k 8k', '-c', 'write -z 960k 17408', 'prealloc.qcow2'], 'qemu-io');
  qemu(['rebase', '-u', '-b', 'base.qcow2', '-F', 'qcow2', 'prealloc.qcow2']);
  images.preallocatedZero = readFileSync(dirs.path('prealloc.qcow2'));
});
after(() => dirs.remove());

const CASES: [string, string][] = [['sharedData', '3M'], ['sharedData', '1048576'], ['sharedZero', '3M'], ['preallocatedZero', '3M']];

test('grow under a longer backing file from inside a shared or preallocated-zero cluster: qemu-img\'s bytes', () => {
  for (const v of VERSIONS) {
    for (const [name, size] of CASES) {
      const r = dirs.run(v, { 'base.qcow2': base, 'img.qcow2': images[name] }, ['img.qcow2', size]);
      assertSameResize(r, `${v} ${name} ${size}`);
      assert.equal(r.qemu.status, 0, r.qemu.stderr);
    }
  }
});

test('crash safety: every prefix of a head write that copies a shared cluster', () => {
  const path = dirs.path('cut.qcow2');
  const original = dirs.path('original.qcow2');
  const bytes = images.sharedData;
  onCopy(bytes, original, () => undefined);
  const snapshotDisk = (file: string): Buffer => {
    const out = dirs.path('s1.raw');
    assert.equal(runQemu('10.0', ['convert', '-U', '-l', 's1', '-O', 'raw', file, out], { cwd: dirs.root }).status, 0);
    return readFileSync(out);
  };
  const before = snapshotDisk(original);
  const fd = openSync(original, 'r');
  const baseFd = openSync(dirs.path('base.qcow2'), 'r');
  try {
    const guest = qcow2Driver.open(new FdDevice(fd, false), { writable: false });
    guest.attachBacking!(qcow2Driver.open(new FdDevice(baseFd, false), { writable: false }));
    const plan = onCopy(bytes, path, (dev) => qcow2Resize.plan(qcow2Driver.open(dev, { writable: true, readsData: true }), dev, { newSize: 3 * 2 ** 20, preallocation: 'off', backingSize: 8 * 2 ** 20, readGuest: (buf, at) => guest.read(buf, at) }));
    assert.ok('steps' in plan, 'error' in plan ? plan.error : '');
    const total = writeCount(plan.steps);
    assert.ok(total >= 4, `${total} writes`);
    for (let k = 0; k <= total; k++) {
      onCopy(bytes, path, (dev) => applyRepair(dev, plan.steps, { stopAfterWrites: k }));
      const r = runQemu('10.0', ['check', path], { cwd: dirs.root });
      assert.ok(r.status === 0 || r.status === 3, `after ${k} of ${total} writes: check exits ${r.status}: ${r.stdout}${r.stderr}`);
      assert.equal(runQemu('10.0', ['compare', original, path], { cwd: dirs.root }).status, 0, `after ${k} of ${total} writes: reads as before`);
      const now = snapshotDisk(path);
      assert.ok(now.subarray(0, before.length).equals(before), `after ${k} of ${total} writes: the snapshot reads as before`);
    }
  } finally {
    closeSync(fd);
    closeSync(baseFd);
  }
});
