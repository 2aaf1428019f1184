// resize --preallocation=metadata|falloc|full of a qcow2 image whose backing file is longer than
// it, against qemu-img 7.2 and 10.0 (the hunt found instar refusing them). Both releases agree:
// metadata preallocates, then marks the new clusters zero (their zero flags; all zero bits with
// extended L2 entries); falloc and full leave zero-filled clusters without zero flags (with
// extended L2 entries every subcluster allocated); a v2 image preallocates its metadata and then
// fails to write zero clusters (falloc and full succeed). A new end inside a cluster under the
// backing file (qemu copies the backing file's bytes past it) is still refused, nothing written.
// Then every prefix of a metadata preallocation's writes leaves an image qemu checks and reads.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runInstar, runQemu } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qcow2Resize } from '../../src/formats/qcow2/resize.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { ResizeDirs, assertSameResize } from './harness.ts';

const dirs = new ResizeDirs();
const files: Record<string, Uint8Array> = {};

before(() => {
  const make = (name: string, options: string, size: string, ...writes: string[]) => (files[name] = dirs.build(name, options, size, ...writes));
  make('base.qcow2', 'compat=1.1', '8M', 'write -P 1 0 8M');
  const over = 'backing_file=base.qcow2,backing_fmt=qcow2';
  make('t.qcow2', over, '3M', 'write -P 2 0 64k');
  // An old end inside a cluster, extended L2 entries, a v2 image, 4 KiB clusters.
  make('u.qcow2', over, '3000k', 'write -P 2 0 64k');
  make('e.qcow2', `${over},extended_l2=on`, '3000k', 'write -P 2 0 64k');
  make('v.qcow2', `${over},compat=0.10`, '3M', 'write -P 2 0 64k');
  make('s.qcow2', `${over},cluster_size=4k`, '3000k', 'write -P 2 0 64k');
});
after(() => dirs.remove());

const CASES: string[][] = [
  ['--preallocation=metadata', 't.qcow2', '6M'],
  ['--preallocation=falloc', 't.qcow2', '6M'],
  ['--preallocation=full', 't.qcow2', '6M'],
  ['--preallocation=metadata', 'u.qcow2', '6M'],
  ['--preallocation=falloc', 'u.qcow2', '6M'],
  ['--preallocation=metadata', 'e.qcow2', '6M'],
  ['--preallocation=falloc', 'e.qcow2', '6M'],
  ['--preallocation=full', 'e.qcow2', '6M'],
  ['--preallocation=metadata', 'v.qcow2', '6M'],
  ['--preallocation=full', 'v.qcow2', '6M'],
  // Past the backing file's end, and a new end inside a cluster for falloc (qemu zero-fills it).
  ['--preallocation=metadata', 's.qcow2', '10M'],
  ['--preallocation=falloc', 's.qcow2', '3100k'],
];

for (const version of VERSIONS) {
  test(`resize --preallocation over a longer backing file matches qemu-img ${version}`, () => {
    for (const args of CASES) assertSameResize(dirs.run(version, files, args), `${version} resize ${args.join(' ')}`);
  });
}

test('metadata preallocation to a size inside a cluster under the backing file is refused, nothing written', () => {
  const dir = dirs.path('refused');
  mkdirSync(dir);
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  const r = runInstar(['--sandbox=none', 'resize', '--preallocation=metadata', 't.qcow2', '3100k'], { cwd: dir });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /instar cannot resize this qcow2 image \(preallocation to a size that is not whole clusters under a longer backing file is not implemented\); nothing was written\n$/);
  assert.ok(readFileSync(join(dir, 't.qcow2')).equals(files['t.qcow2']));
});

test('metadata preallocation over a longer backing file stopped after every write leaves an image qemu checks and reads', () => {
  const dir = dirs.path('crash');
  mkdirSync(dir);
  writeFileSync(join(dir, 'base.qcow2'), files['base.qcow2']);
  const top = join(dir, 't.qcow2');
  writeFileSync(top, files['t.qcow2']);
  const fd = openSync(top, 'r+');
  let steps;
  try {
    const dev = new FdDevice(fd, true);
    const image = qcow2Driver.open(dev, { writable: true, readsData: true });
    const planned = qcow2Resize.plan(image, dev, { newSize: 6 << 20, preallocation: 'metadata', backingSize: 8 << 20, readGuest: (buf, at) => image.read(buf, at) });
    assert.ok('steps' in planned, 'error' in planned ? planned.error : '');
    steps = planned.steps;
  } finally {
    closeSync(fd);
  }
  const total = writeCount(steps);
  assert.ok(total >= 3, `${total} writes`);
  for (let k = 0; k <= total; k++) {
    writeFileSync(top, files['t.qcow2']);
    const rw = openSync(top, 'r+');
    try {
      applyRepair(new FdDevice(rw, true), steps, { stopAfterWrites: k });
    } finally {
      closeSync(rw);
    }
    const check = runQemu('10.0', ['check', 't.qcow2'], { cwd: dir });
    assert.ok(check.status === 0 || check.status === 3, `after ${k} writes: ${check.stdout}${check.stderr}`);
    // The disk reads as before, the new area (once the size says it is there) as zeros.
    assert.equal(runQemu('10.0', ['compare', '-q', top, join(dirs.path('build'), 't.qcow2')]).status, 0, `after ${k} writes the disk reads differently`);
  }
});
