// resize --preallocation=falloc|full of a qcow2 image whose last cluster is a compressed partial
// cluster, against qemu-img 7.2 and 10.0 (the hunt found instar refusing it): qemu allocates that
// cluster anew with the others, copies its guest bytes into it and frees the 512-byte sectors
// the compressed bytes touched (one reference off each cluster they lie in, never discarded;
// with 4 KiB clusters several compressed clusters share one). Then every prefix of the writes
// leaves an image qemu-img checks with leaks at most and reads as before.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qcow2Resize } from '../../src/formats/qcow2/resize.ts';
import { applyRepair, writeCount, type RepairStep } from '../../src/formats/repair.ts';
import { ResizeDirs, assertSameResize } from './harness.ts';

const dirs = new ResizeDirs();
const files: Record<string, Uint8Array> = {};

before(() => {
  const make = (name: string, options: string, size: string, ...writes: string[]) => (files[name] = dirs.build(name, options, size, ...writes));
  make('c.qcow2', 'compat=1.1', '1025k', 'write -P 1 0 64k', 'write -c -P 2 1024k 1k');
  // Three compressed clusters packed into one host cluster: freeing the last one's sectors leaves it counted.
  make('m.qcow2', 'cluster_size=4k', '1025k', 'write -c -P 3 0 4k', 'write -c -P 4 1020k 4k', 'write -c -P 2 1024k 1k');
});
after(() => dirs.remove());

const CASES: string[][] = [
  ['--preallocation=falloc', 'c.qcow2', '3M'],
  ['--preallocation=full', 'c.qcow2', '1026k'],
  ['--preallocation=falloc', 'm.qcow2', '3M'],
  ['--preallocation=full', 'm.qcow2', '2M'],
];

for (const version of VERSIONS) {
  test(`resize --preallocation=falloc|full from a compressed partial last cluster matches qemu-img ${version}`, () => {
    for (const args of CASES) assertSameResize(dirs.run(version, files, args), `${version} resize ${args.join(' ')}`);
  });
}

test('a falloc growth from a compressed last cluster stopped after every write: leaks at most, the disk reads as before', () => {
  const dir = dirs.path('crash');
  mkdirSync(dir);
  const path = join(dir, 'm.qcow2');
  const onCopy = <T>(fn: (dev: FdDevice) => T): T => {
    writeFileSync(path, files['m.qcow2']);
    const fd = openSync(path, 'r+');
    try {
      return fn(new FdDevice(fd, true));
    } finally {
      closeSync(fd);
    }
  };
  const steps = onCopy((dev): RepairStep[] => {
    const image = qcow2Driver.open(dev, { writable: true, readsData: true });
    const plan = qcow2Resize.plan(image, dev, { newSize: 3 << 20, preallocation: 'falloc', readGuest: (buf, at) => image.read(buf, at) });
    assert.ok('steps' in plan, 'error' in plan ? plan.error : '');
    return plan.steps;
  });
  const total = writeCount(steps);
  assert.ok(total >= 4, `${total} writes`);
  for (let k = 0; k <= total; k++) {
    onCopy((dev) => applyRepair(dev, steps, { stopAfterWrites: k }));
    const check = runQemu('10.0', ['check', path]);
    assert.ok(check.status === 0 || check.status === 3, `after ${k} of ${total} writes: ${check.stdout}${check.stderr}`);
    assert.equal(runQemu('10.0', ['compare', '-q', path, join(dirs.path('build'), 'm.qcow2')]).status, 0, `after ${k} writes the disk reads differently`);
  }
});
