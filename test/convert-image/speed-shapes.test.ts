// convert -O qcow2|vpc|vhdx, the shapes a faster copy loop must keep: a multi-MiB source whose
// data, written-zero and hole runs cross qemu's 2 MiB chunks and the qcow2 L2 tables of several cluster sizes gives the files qemu-img 7.2 and 10.0 write (qcow2 byte
// for byte; vpc and vhdx with their timestamps and GUIDs masked). instar runs in-process, one
// case through the real sandbox.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { qemu, runTool, sameAsOracles, scratch, type Scratch } from './harness.ts';
import { MiB, maskVhd, noise, rawFile } from '../writers/vpc-vmdk-harness.ts';
import { maskVhdx } from '../writers/vhdx-harness.ts';
import { VERSIONS } from '../helpers/oracles.ts';

let s: Scratch;
const SIZE = 9 * MiB + 3 * 512;

before(() => {
  s = scratch();
  // Runs across the 2 MiB chunk boundaries, 32 KiB L2 spans (512-byte clusters) and odd offsets;
  // written zeros inside data (-S skips them), and holes between.
  rawFile(join(s.dir, 'src.raw'), SIZE, [
    [0, noise(1, 3000)],
    [2 * MiB - 5000, noise(2, 10_000)],
    [2 * MiB + 40_000, Buffer.alloc(70_000)],
    [2 * MiB + 110_000, noise(3, 300_000)],
    [4 * MiB - 512, noise(4, 2 * MiB + 1024)],
    [6 * MiB + 4096 * 3, Buffer.alloc(8192, 0x5a)],
    [7 * MiB + 33, noise(5, 32 * 1024)],
    [9 * MiB, noise(6, 3 * 512)],
  ]);
  qemu(['convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', 'src.raw', 'src.qcow2'], s.dir);
});
after(() => s.cleanup());

const QCOW2_SHAPES: [string, string[]][] = [
  ['c512', ['-o', 'cluster_size=512']],
  ['c4k', ['-o', 'cluster_size=4096']],
  ['c2m', ['-o', 'cluster_size=2M']],
  ['l2ext', ['-o', 'extended_l2=on,cluster_size=64k']],
  ['s0', ['-S', '0', '-o', 'cluster_size=4096']],
];

for (const [label, opts] of QCOW2_SHAPES) {
  test(`convert -O qcow2 ${opts.join(' ')}: the files of qemu-img 7.2 and 10.0, byte for byte`, () => {
    sameAsOracles(s.dir, ['convert', '-f', 'raw', '-O', 'qcow2', ...opts, '../src.raw', 'out.qcow2'], { label, profiles: ['10.0'] });
  });
}

test('convert -f qcow2 -O qcow2 (64 KiB clusters from 4 KiB ones), through the real sandbox: both oracles\' file', () => {
  sameAsOracles(s.dir, ['convert', '-f', 'qcow2', '-O', 'qcow2', '../src.qcow2', 'out.qcow2'], { label: 'q2q', sandbox: true, profiles: ['10.0'] });
});

for (const [format, mask] of [['vpc', maskVhd], ['vhdx', maskVhdx]] as const) {
  test(`convert -O ${format}: qemu-img 7.2's and 10.0's file, timestamps and GUIDs masked`, () => {
    // The file names its creator's version: instar runs under the profile of the oracle it is compared with.
    for (const v of VERSIONS) {
      const args = ['convert', '-f', 'raw', '-O', format, '../src.raw', `out.${format}`];
      const ours = runTool('instar', s.dir, `${format}-instar-${v}`, ['--sandbox=none', `--qemu-version=${v}`, ...args]);
      assert.equal(ours.result.status, 0, ours.result.stderr);
      const theirs = runTool(v, s.dir, `${format}-${v}`, args);
      assert.equal(theirs.result.status, 0, theirs.result.stderr);
      const mine = mask(ours.files.get(`out.${format}`)!, `instar ${format}`);
      assert.ok(mine.equals(mask(theirs.files.get(`out.${format}`)!, `qemu ${v} ${format}`)), `${format} differs from qemu ${v}'s`);
    }
  });
}
