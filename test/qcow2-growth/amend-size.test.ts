// amend -o size=N on qcow2 is qemu's truncate (qcow2_amend_options → blk_truncate): growing,
// shrinking (without --shrink, unlike resize), qemu's error for a size that is not a multiple of
// 512, and a growth that needs a bigger refcount table; files byte-identical to qemu-img 7.2's
// and 10.0's, output and exit status alike.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { VERSIONS } from '../helpers/oracles.ts';
import { PairRunner } from './pair.ts';
import { assertSameRun } from '../check/repair-harness.ts';
import { buildImage } from '../snapshot/harness.ts';

const dirs = new PairRunner();
const images: Record<string, Uint8Array> = {};

before(() => {
  images.small = buildImage(dirs.root, 'small.qcow2', ['-f', 'qcow2', '1M'], ['write -P 1 0 600k']);
  // 512-byte clusters with a full one-cluster refcount table: a bigger L1 table needs a new one.
  images.full = buildImage(dirs.root, 'full.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512', '16M'], ['write -P 0x5a 0 8026k']);
});
after(() => dirs.remove());

for (const version of VERSIONS) {
  test(`${version}: amend -o size grows and shrinks as qemu-img does`, async () => {
    const cases: [string, string][] = [['small', '100M'], ['small', '512k'], ['small', '1025k'], ['small', '1000'], ['full', '64M']];
    for (const [image, size] of cases) {
      const r = await dirs.run(version, { 'img.qcow2': images[image] }, ['amend', '-o', `size=${size}`, 'img.qcow2']);
      const what = `${version} ${image} size=${size}`;
      assertSameRun(r, what);
      assert.equal(r.qemu.status, size === '1000' ? 1 : 0, `${what}: ${r.qemu.stderr}`);
      const file = r.instarFiles['img.qcow2'];
      assert.ok(file.equals(r.qemuFiles['img.qcow2']), `${what}: instar's file is qemu-img's`);
      if (size !== '1000') assert.ok(!file.equals(Buffer.from(images[image])), `${what}: the image changed`);
    }
  });
}

test('amend -o size through the sandbox, and together with another change', async () => {
  const r = await dirs.run('10.0', { 'img.qcow2': images.full }, ['amend', '-o', 'size=64M', 'img.qcow2'], { sandboxed: true });
  assertSameRun(r, 'sandboxed');
  assert.ok(r.instarFiles['img.qcow2'].equals(r.qemuFiles['img.qcow2']), 'sandboxed: instar\'s file is qemu-img\'s');
  // The header rewrite first, then the truncate (amend-size-with.test.ts has more).
  const x = await dirs.run('10.0', { 'img.qcow2': images.small }, ['amend', '-o', 'lazy_refcounts=on,size=4M', 'img.qcow2']);
  assertSameRun(x, 'with lazy_refcounts');
  assert.equal(x.qemu.status, 0, x.qemu.stderr);
  assert.ok(x.instarFiles['img.qcow2'].equals(x.qemuFiles['img.qcow2']), 'with lazy_refcounts: instar\'s file is qemu-img\'s');
});
