// qcow2 resize --preallocation=metadata|falloc|full into an L2 table an internal snapshot shares:
// qemu's get_cluster_table copies the table first (l2_allocate: a new cluster first-fit, the old
// entries kept), links the copy and drops the active disk's reference on the old one. Files
// byte-identical to qemu-img 7.2's and 10.0's (64 KiB and 4 KiB clusters, a grow from inside a
// cluster); every prefix of a metadata preallocation's writes leaves an image qemu-img checks with
// leaks at most, whose disk and snapshot read as before.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { PairRunner, onCopy, plannedResize } from './pair.ts';
import { assertSameRun } from '../check/repair-harness.ts';
import { buildImage } from '../snapshot/harness.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';

const dirs = new PairRunner();
const images: Record<string, Uint8Array> = {};

/** An image built by qemu, a snapshot s1 taken, then `after` written over it. */
function snapshotted(name: string, create: string[], writes: string[], after: string[] = []): Uint8Array {
  buildImage(dirs.root, name, ['-f', 'qcow2', ...create], writes);
  const path = join(dirs.root, name);
  assert.equal(runQemu('7.2', ['snapshot', '-c', 's1', path]).status, 0);
  if (after.length > 0) assert.equal(runQemu('7.2', [...after.flatMap((c) => ['-c', c]), path], {}, 'qemu-io').status, 0);
  return new Uint8Array(readFileSync(path));
}

before(() => {
  images.plain = snapshotted('plain.qcow2', ['1M'], ['write -P 3 0 16k']);
  // 2 MiB per L2 table: a copied table, then new ones, some data rewritten since the snapshot.
  images.small = snapshotted('small.qcow2', ['-o', 'cluster_size=4096', '1M'], ['write -P 3 0 1M'], ['write -P 4 8k 4k']);
  images.partial = snapshotted('partial.qcow2', ['1000000'], ['write -P 3 960k 16k']);
});
after(() => dirs.remove());

const CASES: [string, 'metadata' | 'falloc' | 'full', string][] = [
  ['plain', 'metadata', '2M'], ['plain', 'falloc', '2M'], ['small', 'metadata', '5M'], ['small', 'falloc', '5M'], ['small', 'full', '3M'], ['partial', 'full', '2M'],
];

for (const version of VERSIONS) {
  test(`${version}: preallocating resize into a snapshot's shared L2 table writes what qemu-img writes`, async () => {
    for (const [name, mode, size] of CASES) {
      const r = await dirs.run(version, { 'img.qcow2': images[name] }, ['resize', `--preallocation=${mode}`, 'img.qcow2', size]);
      const what = `${version} ${name} ${mode} ${size}`;
      assertSameRun(r, what);
      assert.equal(r.qemu.status, 0, `${what}: ${r.qemu.stderr}`);
      assert.ok(r.instarFiles['img.qcow2'].equals(r.qemuFiles['img.qcow2']), `${what}: instar's file is qemu-img's`);
    }
  });
}

test('crash safety: every prefix of a metadata preallocation that copies a shared L2 table', () => {
  const path = join(dirs.root, 'cut.qcow2');
  const original = join(dirs.root, 'original.qcow2');
  onCopy(images.small, original, () => undefined);
  /** The snapshot's disk, read out by qemu-img convert -l. */
  const snapshotDisk = (file: string): Buffer => {
    const out = join(dirs.root, 's1.raw');
    assert.equal(runQemu('10.0', ['convert', '-U', '-l', 's1', '-O', 'raw', file, out]).status, 0);
    return readFileSync(out);
  };
  const snapshot = snapshotDisk(original);
  const steps = onCopy(images.small, path, (dev) => plannedResize(dev, 5 * 2 ** 20, 'metadata', true));
  const total = writeCount(steps);
  assert.ok(total >= 5, `${total} writes`);
  for (let k = 0; k <= total; k++) {
    onCopy(images.small, path, (dev) => applyRepair(dev, steps, { stopAfterWrites: k }));
    const r = runQemu('10.0', ['check', path], { timeoutMs: 20_000 });
    assert.ok(r.status === 0 || r.status === 3, `after ${k} of ${total} writes: check exits ${r.status}: ${r.stdout}${r.stderr}`);
    assert.equal(runQemu('10.0', ['compare', original, path]).status, 0, `after ${k} of ${total} writes: the disk reads as before`);
    // Once the size is written, convert -l reads the snapshot at the disk's new size.
    const now = snapshotDisk(path);
    assert.ok(now.subarray(0, snapshot.length).equals(snapshot) && now.subarray(snapshot.length).every((b) => b === 0), `after ${k} of ${total} writes: the snapshot reads as before`);
  }
});
