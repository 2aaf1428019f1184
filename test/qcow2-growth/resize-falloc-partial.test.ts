// qcow2 resize --preallocation=falloc|full from a size that is not whole clusters: qemu counts the
// old partial last cluster among the new ones, copies its guest bytes to the start of its new
// cluster, replaces its entry (an extended entry keeps its subcluster bitmap) and frees the old
// host cluster at once, where a later new L2 table may land. Files byte-identical to qemu-img
// 7.2's and 10.0's (last cluster with data, unallocated, a zero cluster, over a backing file that
// ends inside it, extended L2 with the freed cluster reused by a new table, with a bitmap); every
// prefix of the reuse case's writes leaves an image qemu-img checks with leaks at
// most, reading as before up to the old size.
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

before(() => {
  const one = (name: string, create: string[], writes: string[] = []) => ({ 'img.qcow2': buildImage(dirs.root, name, ['-f', 'qcow2', ...create, OLD_SIZE], writes) });
  files.data = one('data.qcow2', [], ['write -P 1 960k 16k']);
  files.empty = one('empty.qcow2', []);
  files.zero = one('zero.qcow2', [], ['write -z 960k 16k']);
  files.small = one('small.qcow2', ['-o', 'cluster_size=4096'], ['write -P 2 999424 512', 'write -P 3 0 8k']);
  // 16 MiB per extended L2 table: the old last cluster is freed before the next tables are made.
  files.extended = one('ext.qcow2', ['-o', 'extended_l2=on,cluster_size=16384'], ['write -P 4 970k 4k', 'write -P 5 0 4k']);
  one('bitmap.qcow2', [], ['write -P 7 920k 56k']);
  assert.equal(runQemu('7.2', ['bitmap', '--add', join(dirs.root, 'bitmap.qcow2'), 'b0']).status, 0);
  files.bitmap = { 'img.qcow2': readFileSync(join(dirs.root, 'bitmap.qcow2')) };
  // The backing file ends inside the old last cluster: the copy reads part of it from there.
  const base = buildImage(dirs.root, 'base.qcow2', ['-f', 'qcow2', '990208'], ['write -P 8 0 990208']);
  files.backing = { 'base.qcow2': base, 'img.qcow2': buildImage(dirs.root, 'over.qcow2', ['-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', OLD_SIZE], ['write -P 9 960k 4k']) };
});
after(() => dirs.remove());

const CASES: [string, 'falloc' | 'full', string][] = [
  ['data', 'full', '3M'], ['empty', 'falloc', '1100k'], ['zero', 'full', '2M'], ['small', 'full', '8M'],
  ['extended', 'falloc', '40M'], ['extended', 'full', '1040k'], ['backing', 'full', '2M'], ['bitmap', 'falloc', '5M'],
];

for (const version of VERSIONS) {
  test(`${version}: resize --preallocation=falloc|full from inside a cluster writes what qemu-img writes`, async () => {
    for (const [name, mode, size] of CASES) {
      const r = await dirs.run(version, files[name], ['resize', `--preallocation=${mode}`, 'img.qcow2', size]);
      const what = `${version} ${name} ${mode} ${size}`;
      assertSameRun(r, what);
      assert.equal(r.qemu.status, 0, `${what}: ${r.qemu.stderr}`);
      assert.ok(r.instarFiles['img.qcow2'].equals(r.qemuFiles['img.qcow2']), `${what}: instar's file is qemu-img's`);
    }
  });
}

test('crash safety: every prefix of a falloc from inside a cluster whose freed cluster a new table reuses', () => {
  const path = join(dirs.root, 'cut.qcow2');
  const bytes = files.extended['img.qcow2'];
  const steps = onCopy(bytes, path, (dev) => plannedResize(dev, 40 * 2 ** 20, 'falloc', true));
  const total = writeCount(steps);
  assert.ok(total >= 6, `${total} writes`);
  const original = join(dirs.root, 'original.qcow2');
  onCopy(bytes, original, () => undefined);
  for (let k = 0; k <= total; k++) {
    onCopy(bytes, path, (dev) => applyRepair(dev, steps, { stopAfterWrites: k }));
    const r = runQemu('10.0', ['check', path], { timeoutMs: 20_000 });
    assert.ok(r.status === 0 || r.status === 3, `after ${k} of ${total} writes: check exits ${r.status}: ${r.stdout}${r.stderr}`);
    // The disk reads as before (the grown area, once the size says so, as zeros).
    const same = runQemu('10.0', ['compare', original, path]);
    assert.equal(same.status, 0, `after ${k} of ${total} writes: ${same.stdout}${same.stderr}`);
  }
});
