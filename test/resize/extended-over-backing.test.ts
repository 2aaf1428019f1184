// qcow2 resize (and amend -o size) of an image with extended L2 entries under a longer backing
// file: qemu zeroes the new area by subclusters (the rest of the old end's cluster through its
// zero bits, whole clusters after), then writes explicit zeros from an old end inside a subcluster
// to that subcluster's end, a guest write that allocates the subcluster alone (a new cluster, or
// in place) with the guest's bytes before the old end copied. instar refused an old end inside a
// subcluster, and wrote the zero bits of an old end inside a cluster at a misaligned place (a
// corrupt image). Files byte-identical to qemu-img 7.2's and 10.0's; every prefix of a head
// write's plan leaves an image qemu-img checks with leaks at most, reading as before.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { ResizeDirs, assertSameResize } from './harness.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qcow2Resize } from '../../src/formats/qcow2/resize.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { onCopy } from '../qcow2-growth/pair.ts';
import { TwinDirs, assertSameOutcome } from '../rebase/harness.ts';

const dirs = new ResizeDirs();
const twins = new TwinDirs();
const images: Record<string, Uint8Array> = {};
let base: Uint8Array;

/** An extended-L2 overlay of base.qcow2 (8 MiB of 0x09), `size` bytes, with qemu-io `writes`. */
function overlay(name: string, size: string, writes: string[], options = 'extended_l2=on'): Uint8Array {
  const path = dirs.path(name);
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', options, '-b', 'base.qcow2', '-F', 'qcow2', path, size], { cwd: dirs.root }).status, 0);
  if (writes.length > 0) assert.equal(runQemu('7.2', [...writes.flatMap((w) => ['-c', w]), path], { cwd: dirs.root }, 'qemu-io').status, 0);
  return readFileSync(path);
}

before(() => {
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', dirs.path('base.qcow2'), '8M']).status, 0);
  assert.equal(runQemu('7.2', ['-c', 'write -P 9 0 8M', dirs.path('base.qcow2')], {}, 'qemu-io').status, 0);
  base = readFileSync(dirs.path('base.qcow2'));
  // Old ends on a subcluster boundary inside a cluster (the zero bits), and inside subclusters:
  // an unallocated last cluster, one allocated with the end's subcluster unallocated, and allocated.
  images.subclusterEnd = overlay('sub.qcow2', '999424', ['write -P 1 960k 8k']);
  images.unallocated = overlay('unalloc.qcow2', '1000000', ['write -P 1 0 64k']);
  images.otherSubcluster = overlay('other.qcow2', '1000000', ['write -P 1 970k 1k']);
  images.allocated = overlay('alloc.qcow2', '1000000', ['write -P 2 999424 512']);
  images.zeros = overlay('zeros.qcow2', '1000000', ['write -z 960k 16k']);
  images.small = overlay('small.qcow2', '1000000', ['write -P 1 970k 1k'], 'extended_l2=on,cluster_size=16384');
});
after(() => {
  dirs.remove();
  twins.remove();
});

const CASES: [string, string[]][] = [
  ['subclusterEnd', ['resize', 'img.qcow2', '2M']], ['subclusterEnd', ['resize', 'img.qcow2', '1000448']],
  ['unallocated', ['resize', 'img.qcow2', '8M']], ['unallocated', ['resize', 'img.qcow2', '1001472']],
  ['otherSubcluster', ['resize', 'img.qcow2', '3M']], ['allocated', ['resize', 'img.qcow2', '3M']],
  ['zeros', ['resize', 'img.qcow2', '3M']], ['small', ['resize', 'img.qcow2', '5M']],
];

test('extended-L2 grow under a longer backing file from inside a cluster or subcluster: qemu-img\'s bytes', () => {
  for (const v of VERSIONS) {
    for (const [name, args] of CASES) {
      const r = dirs.run(v, { 'base.qcow2': base, 'img.qcow2': images[name] }, args.slice(1));
      assertSameResize(r, `${v} ${name} ${args.join(' ')}`);
      assert.equal(r.qemu.status, 0, r.qemu.stderr);
      assert.equal(runQemu(v, ['check', join(r.idir, 'img.qcow2')]).status, 0, `${v} ${name}: instar's image checks clean`);
    }
    // amend -o size takes the same path.
    const r = twins.run(v, { 'base.qcow2': base, 'img.qcow2': images.allocated }, ['amend', '-o', 'size=3M', 'img.qcow2']);
    assertSameOutcome(r, ['img.qcow2'], `${v} amend -o size=3M`);
  }
});

test('crash safety: every prefix of a head write into a new cluster checks with leaks at most, reading as before', () => {
  const path = dirs.path('cut.qcow2');
  const original = dirs.path('original.qcow2');
  onCopy(images.unallocated, original, () => undefined);
  const baseFd = openSync(dirs.path('base.qcow2'), 'r');
  try {
    const backing = qcow2Driver.open(new FdDevice(baseFd, false), { writable: false });
    // The top's last cluster is unallocated: its guest bytes are the backing file's.
    const plan = onCopy(images.unallocated, path, (dev) => qcow2Resize.plan(qcow2Driver.open(dev, { writable: true, readsData: true }), dev, { newSize: 8 * 2 ** 20, preallocation: 'off', backingSize: 8 * 2 ** 20, readGuest: (buf, at) => backing.read(buf, at) }));
    assert.ok('steps' in plan, 'error' in plan ? plan.error : '');
    const total = writeCount(plan.steps);
    assert.ok(total >= 4, `${total} writes`);
    for (let k = 0; k <= total; k++) {
      onCopy(images.unallocated, path, (dev) => applyRepair(dev, plan.steps, { stopAfterWrites: k }));
      const r = runQemu('10.0', ['check', path], { cwd: dirs.root });
      assert.ok(r.status === 0 || r.status === 3, `after ${k} of ${total} writes: check exits ${r.status}: ${r.stdout}${r.stderr}`);
      assert.equal(runQemu('10.0', ['compare', original, path], { cwd: dirs.root }).status, 0, `after ${k} of ${total} writes: reads as before`);
    }
  } finally {
    closeSync(baseFd);
  }
});
