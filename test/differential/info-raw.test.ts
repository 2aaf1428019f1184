// `info` on raw images: instar against qemu-img 7.2 and 10.0, human and JSON.
import { after, before, test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { ImageDir, assertSameOutput } from './harness.ts';

const images = new ImageDir('info-raw');

before(() => {
  writeFileSync(images.path('empty.raw'), '');
  images.sparse('odd.raw', 1000); // not a whole sector: qemu rounds up
  writeFileSync(images.path('small.raw'), Buffer.alloc(12345, 0xab));
  images.sparse('sparse.raw', 1024 ** 3);
  images.sparse('huge.raw', 1024 ** 4);
  images.sparse('com,ma.raw', 2048);
  images.img('create', '-f', 'raw', 'created.raw', '64M');
  images.img('create', '-f', 'raw', '-o', 'preallocation=full', 'full.raw', '3M');
  images.io('-f', 'raw', '-c', 'write -P 0xab 0 64k', '-c', 'write -P 0xcd 1M 4k', 'created.raw');
});

after(() => images.remove());

const FILES = ['empty.raw', 'odd.raw', 'small.raw', 'sparse.raw', 'huge.raw', 'created.raw', 'full.raw'];

for (const file of FILES) {
  for (const output of ['human', 'json']) {
    test(`raw ${file} -f raw --output=${output}`, async () => {
      await assertSameOutput(images.dir, ['info', '-f', 'raw', `--output=${output}`, file]);
    });
  }
}

// Without -f, qemu-img falls back to raw; instar does that only with --unsafe-quirks.
for (const output of ['human', 'json']) {
  test(`raw probed (--unsafe-quirks) --output=${output}`, async () => {
    await assertSameOutput(images.dir, ['info', `--output=${output}`, 'created.raw'], { instarArgs: ['--unsafe-quirks'] });
  });
}

test('raw through --image-opts', async () => {
  await assertSameOutput(images.dir, ['info', '--image-opts', 'driver=raw,file.filename=small.raw']);
  await assertSameOutput(images.dir, ['info', '--output=json', '--image-opts', 'driver=raw,file.driver=file,file.filename=odd.raw']);
  // ",," is a literal comma in qemu's option syntax.
  await assertSameOutput(images.dir, ['info', '--image-opts', 'driver=raw,file.filename=com,,ma.raw']);
});

test('the protocol node alone (-f file / driver=file)', async () => {
  await assertSameOutput(images.dir, ['info', '-f', 'file', 'small.raw']);
  await assertSameOutput(images.dir, ['info', '--output=json', '--image-opts', 'driver=file,filename=odd.raw']);
});
