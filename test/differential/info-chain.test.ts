// `info` on images with backing files, with and without --backing-chain.
import { after, before, test } from 'node:test';
import { ImageDir, assertSameOutput } from './harness.ts';

const images = new ImageDir('info-chain');

before(() => {
  const img = images.img.bind(images);
  img('create', '-f', 'qcow2', 'base.qcow2', '64M');
  images.io('-c', 'write -P 0x01 0 1M', 'base.qcow2');
  img('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2');
  images.io('-c', 'write -P 0x02 1M 1M', 'mid.qcow2');
  img('snapshot', '-c', 'in-the-middle', 'mid.qcow2');
  img('create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2');
  images.mkdir('sub');
  img('create', '-f', 'qcow2', 'sub/inner.qcow2', '32M');
  img('create', '-f', 'qcow2', '-b', 'sub/inner.qcow2', '-F', 'qcow2', 'to-sub.qcow2');
  img('create', '-f', 'qcow2', '-b', 'inner.qcow2', '-F', 'qcow2', 'sub/sibling.qcow2');
  img('create', '-f', 'qcow2', '-b', '../base.qcow2', '-F', 'qcow2', 'sub/up.qcow2');
  img('create', '-f', 'qcow2', '-b', images.path('base.qcow2'), '-F', 'qcow2', 'absolute.qcow2');
  img('create', '-f', 'raw', 'base.raw', '16M');
  img('create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'over-raw.qcow2');
  img('create', '-f', 'qcow2', '-b', 'v2-base.qcow2', '-F', 'qcow2', '-u', '-o', 'compat=0.10', 'v2-top.qcow2', '64M');
  img('create', '-f', 'qcow2', '-o', 'compat=0.10', 'v2-base.qcow2', '64M');
  img('create', '-f', 'qcow2', '-u', '-b', 'missing.qcow2', '-F', 'qcow2', 'dangling.qcow2', '64M');
  img('create', '-f', 'qcow2', '-u', '-b', 'loop-b.qcow2', '-F', 'qcow2', 'loop-a.qcow2', '64M');
  img('create', '-f', 'qcow2', '-u', '-b', 'loop-a.qcow2', '-F', 'qcow2', 'loop-b.qcow2', '64M');
});

after(() => images.remove());

const SINGLE = ['mid.qcow2', 'top.qcow2', 'to-sub.qcow2', 'sub/sibling.qcow2', 'sub/up.qcow2', 'absolute.qcow2', 'over-raw.qcow2', 'v2-top.qcow2', 'dangling.qcow2', 'loop-a.qcow2'];

for (const file of SINGLE) {
  for (const output of ['human', 'json']) {
    test(`backed ${file} --output=${output}`, async () => await assertSameOutput(images.dir, ['info', `--output=${output}`, file]));
  }
}

const CHAINS = ['top.qcow2', 'to-sub.qcow2', 'sub/sibling.qcow2', 'absolute.qcow2', 'over-raw.qcow2', 'v2-top.qcow2'];

for (const file of CHAINS) {
  for (const output of ['human', 'json']) {
    test(`--backing-chain ${file} --output=${output}`, async () => {
      await assertSameOutput(images.dir, ['info', '--backing-chain', `--output=${output}`, file]);
    });
  }
}

test('--backing-chain above the image directory, allowed with --allow-path', async () => {
  await assertSameOutput(images.dir, ['info', '--backing-chain', 'sub/up.qcow2'], { instarArgs: ['--allow-path', '.'] });
});

test('--backing-chain with a missing backing file fails as qemu-img does', async () => {
  await assertSameOutput(images.dir, ['info', '--backing-chain', 'dangling.qcow2']);
  await assertSameOutput(images.dir, ['info', '--backing-chain', '--output=json', 'dangling.qcow2']);
});

test('--backing-chain detects a loop as qemu-img does', async () => {
  await assertSameOutput(images.dir, ['info', '--backing-chain', 'loop-a.qcow2']);
});
