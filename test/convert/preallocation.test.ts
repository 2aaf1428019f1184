// convert into a raw target with -o preallocation=falloc|full, and -O file (qemu's file protocol
// named as the output format): qemu's file protocol makes the new target whole before the copy
// (falloc: reserved blocks, unwritten extents that read as zeros and that SEEK_DATA, so map,
// calls holes; full: zeros written), then writes the data. Compared with both oracles: messages,
// exit status, the output's bytes and its allocation as qemu-img map shows it.
import { test, before, after } from 'node:test';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sameTargetAsOracles } from './target-sides.ts';
import { qemu, qemuIo, tempDir } from './helpers.ts';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'src.qcow2'), '10M']);
  qemuIo(join(dir, 'src.qcow2'), ['write -P 7 1M 1M', 'write -z 3M 1M', 'write -P 9 9M 64k']);
  writeFileSync(join(dir, 'src.raw'), '');
  truncateSync(join(dir, 'src.raw'), 6 * MiB + 1000);
  qemuIo(join(dir, 'src.raw'), ['write -P 4 0 64k', 'write -P 5 5M 512k'], 'raw');
});
after(() => cleanup());

const CASES: string[][] = [
  ['-O', 'raw', '-o', 'preallocation=falloc', 'src.qcow2'],
  ['-O', 'raw', '-o', 'preallocation=full', 'src.qcow2'],
  ['-f', 'raw', '-O', 'raw', '-o', 'preallocation=falloc', 'src.raw'],
  ['-f', 'raw', '-O', 'raw', '-o', 'preallocation=full,nocow=on', '-p', 'src.raw'],
  ['-O', 'raw', '-o', 'preallocation=falloc', '-S', '0', 'src.qcow2'],
  ['-O', 'file', 'src.qcow2'],
  ['-f', 'raw', '-O', 'file', 'src.raw'],
  ['-O', 'file', '-o', 'preallocation=falloc', 'src.qcow2'],
  ['-O', 'file', '-o', 'preallocation=metadata', 'src.qcow2'],
  ['-O', 'file', '-o', 'preallocation=bogus', 'src.qcow2'],
  ['-O', 'file', '-o', 'cluster_size=4k', 'src.qcow2'],
  ['-O', 'file', '-o', 'help'],
  ['-O', 'file', '-B', 'src.raw', 'src.qcow2'],
  ['-O', 'file', '-c', 'src.qcow2'],
  ['-O', 'file', '--bitmaps', 'src.qcow2'],
];

for (const args of CASES) {
  test(`convert ${args.join(' ')}: as qemu-img 7.2 and 10.0 make it`, () => sameTargetAsOracles(dir, args, (a) => a.startsWith('src.')));
}
