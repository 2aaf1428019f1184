// qcow2 resize --preallocation=metadata from a size inside a cluster whose old last cluster qemu
// cannot keep: a zero cluster, a data cluster an internal snapshot shares, or unallocated over a
// backing file that ends inside it. qemu's handle_alloc allocates it anew with the new clusters,
// link_l2's copy-on-write copies its guest bytes (zeros, data, the backing file's) to the new
// cluster, and a shared one loses the active disk's reference. Files byte-identical to qemu-img
// 7.2's and 10.0's (standard and extended L2 entries); every prefix of the shared case's writes
// leaves an image qemu-img checks with leaks at most, whose disk and snapshot read as before.
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
const files: Record<string, Record<string, Uint8Array>> = {};
const OLD_SIZE = '1000000';

/** qemu-img snapshot -c s1 on the image `name` built before; its bytes. */
function snapshot(name: string): Uint8Array {
  assert.equal(runQemu('7.2', ['snapshot', '-c', 's1', join(dirs.root, name)]).status, 0);
  return readFileSync(join(dirs.root, name));
}

before(() => {
  const image = (name: string, create: string[], writes: string[] = []) => buildImage(dirs.root, name, ['-f', 'qcow2', ...create, OLD_SIZE], writes);
  files.zero = { 'img.qcow2': image('zero.qcow2', [], ['write -z 960k 16k']) };
  image('shared.qcow2', [], ['write -P 3 960k 16k']);
  files.shared = { 'img.qcow2': snapshot('shared.qcow2') };
  // 4 KiB clusters: the shared last cluster's L2 table is copied too, then new tables follow.
  image('shared4k.qcow2', ['-o', 'cluster_size=4096'], ['write -P 3 0 1000000']);
  files.shared4k = { 'img.qcow2': snapshot('shared4k.qcow2') };
  // The backing file ends inside the old last cluster (990208 bytes: 983040 is its start).
  const base = buildImage(dirs.root, 'base.qcow2', ['-f', 'qcow2', '990208'], ['write -P 8 0 990208']);
  const over = (name: string, create: string[]) => ({ 'base.qcow2': base, 'img.qcow2': image(name, [...create, '-b', 'base.qcow2', '-F', 'qcow2']) });
  files.backing = over('over.qcow2', []);
  files.backingExtended = over('over-ext.qcow2', ['-o', 'extended_l2=on']);
});
after(() => dirs.remove());

const CASES: [string, string][] = [['zero', '2M'], ['shared', '2M'], ['shared4k', '7M'], ['backing', '1100k'], ['backingExtended', '2M']];

for (const version of VERSIONS) {
  test(`${version}: resize --preallocation=metadata from inside a cluster qemu replaces writes what qemu-img writes`, async () => {
    for (const [name, size] of CASES) {
      const r = await dirs.run(version, files[name], ['resize', '--preallocation=metadata', 'img.qcow2', size]);
      const what = `${version} ${name} ${size}`;
      assertSameRun(r, what);
      assert.equal(r.qemu.status, 0, `${what}: ${r.qemu.stderr}`);
      assert.ok(r.instarFiles['img.qcow2'].equals(r.qemuFiles['img.qcow2']), `${what}: instar's file is qemu-img's`);
    }
  });
}

test('crash safety: every prefix of a metadata grow that replaces a shared partial last cluster', () => {
  const path = join(dirs.root, 'cut.qcow2');
  const original = join(dirs.root, 'original.qcow2');
  const bytes = files.shared['img.qcow2'];
  onCopy(bytes, original, () => undefined);
  const snapshotDisk = (file: string): Buffer => {
    const out = join(dirs.root, 's1.raw');
    assert.equal(runQemu('10.0', ['convert', '-U', '-l', 's1', '-O', 'raw', file, out]).status, 0);
    return readFileSync(out);
  };
  const before = snapshotDisk(original);
  const steps = onCopy(bytes, path, (dev) => plannedResize(dev, 2 * 2 ** 20, 'metadata', true));
  const total = writeCount(steps);
  assert.ok(total >= 5, `${total} writes`);
  for (let k = 0; k <= total; k++) {
    onCopy(bytes, path, (dev) => applyRepair(dev, steps, { stopAfterWrites: k }));
    const r = runQemu('10.0', ['check', path], { timeoutMs: 20_000 });
    assert.ok(r.status === 0 || r.status === 3, `after ${k} of ${total} writes: check exits ${r.status}: ${r.stdout}${r.stderr}`);
    assert.equal(runQemu('10.0', ['compare', original, path]).status, 0, `after ${k} of ${total} writes: the disk reads as before`);
    const now = snapshotDisk(path);
    assert.ok(now.subarray(0, before.length).equals(before) && now.subarray(before.length).every((b) => b === 0), `after ${k} of ${total} writes: the snapshot reads as before`);
  }
});
