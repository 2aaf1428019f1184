// The file protocol named as a format (-f file, -F file, backing_fmt=file): qemu opens the file
// with no format layer above it, prints "file" as its format and reads it as raw. Chains through
// such a backing file and the read-only commands on one, against qemu-img 7.2 and 10.0.
import { after, before, test } from 'node:test';
import { readFileSync } from 'node:fs';
import { ImageDir, assertSameOutput } from './harness.ts';
import { VERSIONS } from '../helpers/oracles.ts';
import { TwinDirs, assertSameOutcome } from '../rebase/harness.ts';

const images = new ImageDir('file-format');

before(() => {
  images.img('create', '-q', '-f', 'raw', 'base.img', '4M');
  images.io('-f', 'raw', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 3M 512', 'base.img');
  images.img('create', '-q', '-f', 'qcow2', '-b', 'base.img', '-F', 'file', 'top.qcow2');
  images.io('-c', 'write -P 0x33 64k 64k', 'top.qcow2');
  // Longer than its base: commit grows the file first.
  images.img('create', '-q', '-f', 'qcow2', '-b', 'base.img', '-F', 'file', 'grown.qcow2', '6M');
  images.io('-c', 'write -P 0x44 5M 64k', '-c', 'write -P 0x55 0 4k', 'grown.qcow2');
});

const twins = new TwinDirs();
after(() => {
  images.remove();
  twins.remove();
});

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

// The base opened as 'file' (backing_fmt=file) is written as a raw one (instar refused it).
test('commit into a base named as file: output, status and files as qemu-img', () => {
  const files = Object.fromEntries(['base.img', 'top.qcow2', 'grown.qcow2'].map((n) => [n, readFileSync(images.path(n))]));
  for (const version of VERSIONS) {
    for (const args of [['commit', 'top.qcow2'], ['commit', '-d', '-f', 'qcow2', '-b', 'base.img', 'top.qcow2'], ['commit', 'grown.qcow2']]) {
      assertSameOutcome(twins.run(version, files, args), Object.keys(files), `${version} ${args.join(' ')}`);
    }
  }
});
