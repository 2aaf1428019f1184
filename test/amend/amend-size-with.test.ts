// amend -o size=N on qcow2 beyond a lone size change, against qemu-img 7.2 and 10.0: images with
// internal snapshots, over a backing file longer than the image (the grown area is zeroed), and
// with other changes in qemu's order (upgrade, refcount width and header changes before the
// truncate, a downgrade after it). Files, output (-p included) and exit status identical; then
// every prefix of instar's writes leaves an image qemu-img check accepts (leaks at most).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { LONG } from '../helpers/long.ts';
import { TwinDirs, assertSameOutcome } from '../rebase/harness.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qcow2Amend } from '../../src/formats/qcow2/amend.ts';

const dirs = new TwinDirs();
const scratch = mkdtempSync(join(tmpdir(), 'instar-amend-size-'));
const images: Record<string, Buffer> = {};

/** An image made by qemu-img create, then qemu-io writes and `snapshot -c` (`snap:NAME`). */
function build(name: string, opts: string, size: string, actions: string[] = []): Buffer {
  const path = join(scratch, name);
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), name, size], { cwd: scratch }).status, 0);
  for (const a of actions) {
    const r = a.startsWith('snap:') ? runQemu('10.0', ['snapshot', '-c', a.slice(5), path]) : runQemu('10.0', ['-c', a, path], {}, 'qemu-io');
    assert.equal(r.status, 0, `${name}: ${a}: ${r.stderr}`);
  }
  return readFileSync(path);
}

before(() => {
  images.plain = build('plain.qcow2', '', '4M', ['write -P 1 0 64k', 'write -P 2 3M 64k']);
  images.snap = build('snap.qcow2', 'cluster_size=4096', '4M', ['write -P 1 0 64k', 'snap:one', 'write -P 3 0 8k']);
  images.v2snap = build('v2snap.qcow2', 'compat=0.10', '4M', ['write -P 4 0 64k', 'snap:one']);
  images.lazy = build('lazy.qcow2', 'lazy_refcounts=on', '4M', ['write -P 5 0 64k']);
  images.c512 = build('c512.qcow2', 'cluster_size=512,refcount_bits=4', '4M', ['write -P 6 0 64k', 'write -P 7 2M 300k']);
  images.base = build('base.qcow2', '', '8M', ['write -P 9 0 8M']);
  images.overlay = build('overlay.qcow2', 'backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=4096', '2M', ['write -P 8 0 64k']);
});

after(() => {
  dirs.remove();
  rmSync(scratch, { recursive: true, force: true });
});

const CASES: [string, string][] = [
  ['snap', 'size=8M'],
  ['snap', 'size=1M'],
  // The same size: qemu truncates anyway when there are snapshots.
  ['snap', 'size=4M'],
  // qemu's "Can't resize a v2 image which has snapshots", and the upgrade that allows it.
  ['v2snap', 'size=8M'],
  ['v2snap', 'compat=1.1,size=8M'],
  // Over a backing file: the grown area up to the backing file's end is zeroed.
  ['overlay', 'size=6M'],
  ['overlay', 'size=16M'],
  ['overlay', 'size=1M'],
  ['plain', 'lazy_refcounts=on,size=8M'],
  ['lazy', 'lazy_refcounts=off,size=2M'],
  // The truncate, then the downgrade over the truncated image (its data past 1M cut off).
  ['plain', 'compat=0.10,size=1M'],
  ['plain', 'compat=0.10,size=8M'],
  // The snapshot's disk size no longer matches: qemu's downgrade error after the truncate.
  ['snap', 'compat=0.10,size=8M'],
  ['c512', 'refcount_bits=8,size=64M'],
  ['c512', 'refcount_bits=16,compat=0.10,size=32M'],
];

test('amend -o size with snapshots, a backing file or other changes writes what qemu-img writes', () => {
  // The two releases agree on all of these (measured): the short tier runs every other case
  // under 10.0 only; the long tier runs all under both.
  CASES.forEach(([image, options], i) => {
    for (const version of LONG || i % 2 === 0 ? VERSIONS : (['10.0'] as const)) {
      const files = { 'img.qcow2': images[image], 'base.qcow2': images.base };
      const r = dirs.run(version, files, ['amend', '-p', '-o', options, 'img.qcow2']);
      assertSameOutcome(r, Object.keys(files), `${options} (${image}, ${version})`);
    }
  });
});

/** Applies the first `writes` steps of instar's amend plan to `path` (a copy of the image); returns how many there are. */
function cutAmend(source: string, path: string, options: Record<string, string>, writes: number): number {
  copyFileSync(source, path);
  const fd = openSync(path, 'r+');
  try {
    const dev = new FdDevice(fd, true);
    const image = qcow2Driver.open(dev, { writable: true, readsData: true });
    const plan = qcow2Amend.plan(dev, image, new Map(Object.entries(options)));
    assert.ok('steps' in plan && plan.error === undefined, JSON.stringify(plan));
    applyRepair(dev, plan.steps, { stopAfterWrites: writes });
    return writeCount(plan.steps);
  } finally {
    closeSync(fd);
  }
}

test('amend -o size with other changes: every prefix of its writes leaves an image qemu-img checks with leaks at most', () => {
  const cases: [string, Record<string, string>][] = [
    ['v2snap', { compat: '1.1', size: '8388608' }], ['plain', { compat: '0.10', size: '1048576' }], ['c512', { refcount_bits: '8', size: '67108864' }],
  ];
  for (const [image, options] of cases) {
    const source = join(scratch, `${image}.qcow2`);
    writeFileSync(source, images[image]);
    const path = join(scratch, 'cut.qcow2');
    let total = Infinity;
    for (let n = 0; n <= total; n++) {
      total = cutAmend(source, path, options, n);
      const check = runQemu('10.0', ['check', path]);
      // 0: clean, 3: leaked clusters only; 2 (corruptions) or 1 (no open) fail.
      assert.ok(check.status === 0 || check.status === 3, `${image} after ${n} of ${total} writes: check exits ${check.status}: ${check.stdout}${check.stderr}`);
    }
    assert.ok(total >= 2, `${image}: ${total} writes`);
    const qemuCopy = join(scratch, 'cut-qemu.qcow2');
    writeFileSync(qemuCopy, images[image]);
    const list = Object.entries(options).map(([k, v]) => `${k}=${v}`).join(',');
    assert.equal(runQemu('10.0', ['amend', '-o', list, qemuCopy]).status, 0);
    assert.ok(readFileSync(path).equals(readFileSync(qemuCopy)), `${image}: the whole plan writes qemu's file`);
  }
});
