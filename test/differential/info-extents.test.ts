// `info` on images made of several files (VMDK extents): the guest names the extents, the host
// opens them through the path policy and runs the guest again with them. Disk size sums the
// files; 10.0 lists each extent as a child node.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, writeFileSync } from 'node:fs';
import { ImageDir, assertSameOutput, SANDBOXED } from './harness.ts';
import { runInstar } from '../helpers/oracles.ts';

const images = new ImageDir('info-extents');

before(() => {
  images.img('create', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'flat.vmdk', '4M');
  images.img('create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'split-sparse.vmdk', '5G');
  images.img('create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentFlat', 'split-flat.vmdk', '3G');
  images.io('-c', 'write -P 0x33 2G 1M', 'split-sparse.vmdk');
  images.img('create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'broken.vmdk', '3G');
  renameSync(images.path('broken-s002.vmdk'), images.path('moved-away.vmdk'));
  images.mkdir('sub');
  images.img('create', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'sub/inner.vmdk', '1M');
  images.img('create', '-f', 'vmdk', 'sparse.vmdk', '1M');
  writeFileSync(images.path('outside.vmdk'),
    '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "/etc/passwd" 0\n');
});

after(() => images.remove());

for (const file of ['flat.vmdk', 'split-sparse.vmdk', 'split-flat.vmdk']) {
  for (const output of ['human', 'json']) {
    test(`vmdk ${file} --output=${output}`, async () => await assertSameOutput(images.dir, ['info', `--output=${output}`, file]));
  }
}

test('a missing extent fails as qemu-img does', async () => {
  await assertSameOutput(images.dir, ['info', 'broken.vmdk']);
});

// qemu prints the extent names it opened ("sub/inner-flat.vmdk"), and the image's own name for a
// sparse file's single extent.
test('vmdk in a subdirectory', async () => await assertSameOutput(images.dir, ['info', 'sub/inner.vmdk']));
test('monolithicSparse names its own file', async () => await assertSameOutput(images.dir, ['info', 'sparse.vmdk']));

test('an extent outside the allowed directories is refused, never opened', async () => {
  const sandbox = SANDBOXED ? [] : ['--sandbox=none'];
  const r = runInstar(['info', 'outside.vmdk', ...sandbox], { cwd: images.dir });
  assert.equal(r.status, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^qemu-img: Could not open 'outside\.vmdk': '\/etc\/passwd' is outside the allowed paths/);
});
