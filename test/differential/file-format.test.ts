// The file protocol named as a format (-f file, -F file, backing_fmt=file): qemu opens the file
// with no format layer above it, prints "file" as its format and reads it as raw. Chains through
// such a backing file and the read-only commands on one, against qemu-img 7.2 and 10.0.
import { after, before, test } from 'node:test';
import { ImageDir, assertSameOutput } from './harness.ts';

const images = new ImageDir('file-format');

before(() => {
  images.img('create', '-q', '-f', 'raw', 'base.img', '4M');
  images.io('-f', 'raw', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 3M 512', 'base.img');
  images.img('create', '-q', '-f', 'qcow2', '-b', 'base.img', '-F', 'file', 'top.qcow2');
  images.io('-c', 'write -P 0x33 64k 64k', 'top.qcow2');
});

after(() => images.remove());

const CASES: string[][] = [
  ['info', '--backing-chain', 'top.qcow2'],
  ['info', '--backing-chain', '--output=json', 'top.qcow2'],
  ['info', '-f', 'file', '--output=json', 'base.img'],
  ['map', 'top.qcow2'],
  ['map', '--output=json', '-f', 'file', 'base.img'],
  ['compare', '-f', 'file', '-F', 'raw', 'base.img', 'base.img'],
  ['compare', '-F', 'file', 'top.qcow2', 'base.img'],
  ['compare', '-f', 'qcow2', '-F', 'file', '-s', 'top.qcow2', 'base.img'],
  ['check', '-f', 'file', 'base.img'],
  ['measure', '-f', 'file', '-O', 'qcow2', 'base.img'],
];

for (const args of CASES) {
  test(args.join(' '), async () => {
    await assertSameOutput(images.dir, args);
  });
}
