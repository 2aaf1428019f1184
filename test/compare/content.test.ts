// compare on identical pairs across formats and on single-byte differences at chosen offsets:
// stdout, stderr and exit status against both oracles, after checking qemu-img 7.2's verdict.
import { after, before, describe, it } from 'node:test';
import { ImageDir, MiB, SIZE, check, convert, writeRaw } from './fixture.ts';

const IDENTICAL = 'Images are identical.\n';
const mismatch = (offset: number) => `Content mismatch at offset ${offset}!\n`;

describe('compare: identical content in different formats', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('compare-same');
    writeRaw(dir, 'a.raw');
    writeRaw(dir, 'copy.raw');
    convert(dir, 'a.raw', 'a.qcow2', 'qcow2');
    convert(dir, 'a.raw', 'a4k.qcow2', 'qcow2', ['-o', 'cluster_size=4096']);
    convert(dir, 'a.raw', 'ac.qcow2', 'qcow2', ['-c']);
    convert(dir, 'a.raw', 'a.vmdk', 'vmdk');
    convert(dir, 'a.raw', 'a.vpc', 'vpc', ['-o', 'force_size=on']);
    convert(dir, 'a.raw', 'a.vhdx', 'vhdx');
    // An overlay over the qcow2 that writes nothing, and one that writes zeros where zeros are.
    dir.img('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'empty-overlay.qcow2');
    dir.img('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'zero-overlay.qcow2');
    dir.io('-c', `write -z ${MiB} 65536`, '-c', `write -P 0 ${4 * MiB} 4096`, 'zero-overlay.qcow2');
    // Zero clusters written into a qcow2 where the raw file has zeros too.
    dir.img('create', '-q', '-f', 'qcow2', 'zeroed.qcow2', String(SIZE));
    dir.img('convert', '-n', '-f', 'raw', '-O', 'qcow2', 'a.raw', 'zeroed.qcow2');
    dir.io('-c', `write -z ${1.5 * MiB} ${MiB / 4}`, 'zeroed.qcow2');
  });
  after(() => dir.remove());

  const pairs: [string, string[]][] = [
    ['raw and its copy', ['-f', 'raw', '-F', 'raw', 'a.raw', 'copy.raw']],
    ['raw and qcow2', ['-f', 'raw', 'a.raw', 'a.qcow2']],
    ['qcow2 and raw', ['-F', 'raw', 'a.qcow2', 'a.raw']],
    ['qcow2 64k and 4k clusters', ['a.qcow2', 'a4k.qcow2']],
    ['qcow2 and compressed qcow2', ['a.qcow2', 'ac.qcow2']],
    ['qcow2 and vmdk', ['a.qcow2', 'a.vmdk']],
    ['raw and vpc', ['-f', 'raw', 'a.raw', 'a.vpc']],
    ['vhdx and raw', ['-F', 'raw', 'a.vhdx', 'a.raw']],
    ['vmdk and vhdx', ['a.vmdk', 'a.vhdx']],
    ['vpc and compressed qcow2', ['a.vpc', 'ac.qcow2']],
    ['empty overlay and its base', ['empty-overlay.qcow2', 'a.qcow2']],
    ['overlay with zero writes and raw', ['-F', 'raw', 'zero-overlay.qcow2', 'a.raw']],
    ['qcow2 with zero clusters and vmdk', ['zeroed.qcow2', 'a.vmdk']],
    ['an image and itself', ['a.vhdx', 'a.vhdx']],
  ];
  for (const [name, args] of pairs) {
    it(name, () => check(dir, ['compare', ...args], { status: 0, stdout: IDENTICAL }));
  }
});

describe('compare: one changed byte', () => {
  let dir: ImageDir;
  // Offset of the flipped byte → the offset qemu reports (the start of its 512-byte sector).
  const flips: [number, number][] = [
    [0, 0],
    [511, 0],
    [512, 512],
    [1000, 512],
    [65537, 65536],
    [MiB + 5, MiB], // in a hole of the original: data against unallocated
    [2 * MiB + 2 * MiB + 3, 4 * MiB], // a second IO chunk, in a hole again
    [3 * MiB + 777, 3 * MiB + 512],
    [SIZE - 1, SIZE - 512],
  ];
  before(() => {
    dir = new ImageDir('compare-diff');
    writeRaw(dir, 'a.raw');
    convert(dir, 'a.raw', 'a.qcow2', 'qcow2');
    for (const [at] of flips) {
      writeRaw(dir, `f${at}.raw`, [at]);
      convert(dir, `f${at}.raw`, `f${at}.qcow2`, 'qcow2');
    }
    for (const at of [1000, SIZE - 1]) {
      convert(dir, `f${at}.raw`, `f${at}.vmdk`, 'vmdk');
      convert(dir, `f${at}.raw`, `f${at}.vhdx`, 'vhdx');
      convert(dir, `f${at}.raw`, `f${at}.vpc`, 'vpc', ['-o', 'force_size=on']);
      convert(dir, `f${at}.raw`, `f${at}c.qcow2`, 'qcow2', ['-c']);
    }
    // Overlay that changes one sector of its base.
    dir.img('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'dirty-overlay.qcow2');
    dir.io('-c', `write -P 0x5a ${2 * MiB + 4096 + 100} 1`, 'dirty-overlay.qcow2');
  });
  after(() => dir.remove());

  for (const [at, reported] of flips) {
    it(`raw against qcow2, byte ${at}`, () => check(dir, ['compare', '-f', 'raw', `f${at}.raw`, 'a.qcow2'], { status: 1, stdout: mismatch(reported) }));
    it(`qcow2 against raw, byte ${at}`, () => check(dir, ['compare', '-F', 'raw', `f${at}.qcow2`, 'a.raw'], { status: 1, stdout: mismatch(reported) }));
  }
  for (const at of [1000, SIZE - 1]) {
    const reported = at - (at % 512);
    for (const ext of ['vmdk', 'vhdx', 'vpc']) {
      it(`${ext} against qcow2, byte ${at}`, () => check(dir, ['compare', `f${at}.${ext}`, 'a.qcow2'], { status: 1, stdout: mismatch(reported) }));
    }
    it(`compressed qcow2 against raw, byte ${at}`, () => check(dir, ['compare', '-F', 'raw', `f${at}c.qcow2`, 'a.raw'], { status: 1, stdout: mismatch(reported) }));
  }
  it('overlay writing one byte against its base', () =>
    check(dir, ['compare', 'dirty-overlay.qcow2', 'a.qcow2'], { status: 1, stdout: mismatch(2 * MiB + 4096) }));
  it('-q prints nothing and still exits 1', () => check(dir, ['compare', '-q', '-f', 'raw', 'f512.raw', 'a.qcow2'], { status: 1, stdout: '' }));
});

describe('compare: offsets past 4 GiB', () => {
  let dir: ImageDir;
  const GiB = 1024 * MiB;
  before(() => {
    dir = new ImageDir('compare-big');
    dir.img('create', '-q', '-f', 'qcow2', 'blank.qcow2', '6G');
    dir.img('create', '-q', '-f', 'qcow2', 'late.qcow2', '6G');
    dir.io('-c', `write -P 3 ${5 * GiB + 3} 1`, 'late.qcow2');
    dir.img('create', '-q', '-f', 'qcow2', 'longer.qcow2', '7G');
    dir.img('create', '-q', '-f', 'vmdk', 'blank.vmdk', '6G');
  });
  after(() => dir.remove());

  it('one byte at 5 GiB + 3', () => check(dir, ['compare', '-p', 'blank.qcow2', 'late.qcow2'], { status: 1, stdout: new RegExp(`Content mismatch at offset ${5 * GiB}!\n\n$`) }));
  it('a 6 GiB image against a 7 GiB one, with the difference inside', () => check(dir, ['compare', 'longer.qcow2', 'late.qcow2'], { status: 1 }));
  it('blank qcow2 and blank vmdk (grain by grain in qemu), with progress', () => check(dir, ['compare', '-p', 'blank.vmdk', 'blank.qcow2'], { status: 0 }));
});
