// compare on images of different sizes (the longer tail must read as zeros; -s refuses at once)
// and strict mode's block-status comparison, against both oracles.
import { after, before, describe, it } from 'node:test';
import { ImageDir, MiB, SIZE, check, convert, writeRaw } from './fixture.ts';

const WARNING = 'Warning: Image size mismatch!\n';

describe('compare: size mismatch', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('compare-size');
    writeRaw(dir, 'a.raw');
    convert(dir, 'a.raw', 'a.qcow2', 'qcow2');
    // Longer by 1 MiB of zeros (raw: dense zeros; qcow2: an unallocated tail).
    writeRaw(dir, 'long.raw', [], SIZE + MiB);
    convert(dir, 'long.raw', 'long.qcow2', 'qcow2');
    dir.img('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'grown.qcow2', String(SIZE + 3 * MiB));
    // Longer, with a non-zero byte past the shorter image's end.
    writeRaw(dir, 'long-dirty.raw', [SIZE + 70000], SIZE + MiB);
    dir.img('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'grown-dirty.qcow2', String(SIZE + 3 * MiB));
    dir.io('-c', `write -P 7 ${SIZE + 2 * MiB + 1234} 10`, 'grown-dirty.qcow2');
    // Shorter: cut before the data tail, so the longer one's tail is not zero.
    writeRaw(dir, 'short.raw', [], 4 * MiB);
    convert(dir, 'short.raw', 'short.qcow2', 'qcow2');
  });
  after(() => dir.remove());

  it('longer raw with a zero tail, both orders', async () => {
    await check(dir, ['compare', '-f', 'raw', '-F', 'raw', 'a.raw', 'long.raw'], { status: 0, stdout: `${WARNING}Images are identical.\n` });
    await check(dir, ['compare', '-f', 'raw', '-F', 'raw', 'long.raw', 'a.raw'], { status: 0, stdout: `${WARNING}Images are identical.\n` });
  });
  it('longer qcow2 with an unallocated tail, both orders', async () => {
    await check(dir, ['compare', 'a.qcow2', 'long.qcow2'], { status: 0, stdout: `${WARNING}Images are identical.\n` });
    await check(dir, ['compare', 'grown.qcow2', 'a.qcow2'], { status: 0, stdout: `${WARNING}Images are identical.\n` });
  });
  it('longer image with data in its tail, both orders', async () => {
    await check(dir, ['compare', '-f', 'raw', 'long-dirty.raw', 'a.qcow2'], { status: 1, stdout: `${WARNING}Content mismatch at offset ${SIZE + 69632}!\n` });
    await check(dir, ['compare', 'a.qcow2', 'grown-dirty.qcow2'], { status: 1, stdout: `${WARNING}Content mismatch at offset ${SIZE + 2 * MiB + 1024}!\n` });
  });
  it('shorter image: the longer one differs inside the common part', async () => {
    await check(dir, ['compare', 'short.qcow2', 'a.qcow2'], { status: 1, stdout: `${WARNING}Content mismatch at offset ${SIZE - 64 * 1024}!\n` });
    await check(dir, ['compare', '-F', 'raw', 'a.qcow2', 'short.raw'], { status: 1, stdout: `${WARNING}Content mismatch at offset ${SIZE - 64 * 1024}!\n` });
  });
  it('-s refuses any size mismatch, both orders', async () => {
    const refused = { status: 1, stdout: 'Strict mode: Image size mismatch!\n' };
    await check(dir, ['compare', '-s', 'a.qcow2', 'long.qcow2'], refused);
    await check(dir, ['compare', '-s', 'grown.qcow2', 'a.qcow2'], refused);
    await check(dir, ['compare', '-s', '-f', 'raw', '-F', 'raw', 'a.raw', 'long.raw'], refused);
    // 7.2 has no --strict (an unknown option there, exit 1 with usage text); 10.0 has it.
    await check(dir, ['compare', '--strict', 'a.qcow2', 'long.qcow2'], { status: 1, stdout: '' });
    await check(dir, ['compare', '-s', '-q', 'short.qcow2', 'a.qcow2'], { status: 1, stdout: '' });
  });
});

describe('compare -s: block status', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('compare-strict');
    writeRaw(dir, 'a.raw');
    convert(dir, 'a.raw', 'a.qcow2', 'qcow2');
    convert(dir, 'a.raw', 'b.qcow2', 'qcow2');
    // Same content, but [1M, 1M+64k) is a zero cluster instead of unallocated.
    dir.img('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'zero-overlay.qcow2');
    dir.io('-c', `write -z ${MiB} 65536`, 'zero-overlay.qcow2');
    convert(dir, 'a.raw', 'zc.qcow2', 'qcow2');
    dir.io('-c', `write -z ${MiB + 128 * 1024} 65536`, 'zc.qcow2');
    // Same content, zeros written as data.
    convert(dir, 'a.raw', 'zd.qcow2', 'qcow2');
    dir.io('-c', `write -P 0 ${4 * MiB} 65536`, 'zd.qcow2');
    dir.img('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'empty-overlay.qcow2');
    dir.img('create', '-q', '-f', 'qcow2', 'blank.qcow2', String(SIZE));
    dir.img('create', '-q', '-f', 'qcow2', 'blank2.qcow2', String(SIZE));
    writeRaw(dir, 'f.raw', [2 * MiB + 9]);
    convert(dir, 'f.raw', 'f.qcow2', 'qcow2');
  });
  after(() => dir.remove());

  it('two conversions of the same content are identical', () => check(dir, ['compare', '-s', 'a.qcow2', 'b.qcow2'], { status: 0, stdout: 'Images are identical.\n' }));
  it('an empty overlay and its base are identical', () => check(dir, ['compare', '-s', 'empty-overlay.qcow2', 'a.qcow2'], { status: 0 }));
  it('two blank images are identical', () => check(dir, ['compare', '-s', 'blank.qcow2', 'blank2.qcow2'], { status: 0 }));
  it('a zero cluster against a hole', () => check(dir, ['compare', '-s', 'zero-overlay.qcow2', 'a.qcow2'], { status: 1, stdout: `Strict mode: Offset ${MiB} block status mismatch!\n` }));
  it('a hole against a zero cluster', () => check(dir, ['compare', '-s', 'a.qcow2', 'zc.qcow2'], { status: 1, stdout: `Strict mode: Offset ${MiB + 128 * 1024} block status mismatch!\n` }));
  it('zeros written as data against a hole', () => check(dir, ['compare', '-s', 'zd.qcow2', 'a.qcow2'], { status: 1, stdout: `Strict mode: Offset ${4 * MiB} block status mismatch!\n` }));
  it('without -s the same pairs are identical', async () => {
    await check(dir, ['compare', 'zero-overlay.qcow2', 'a.qcow2'], { status: 0 });
    await check(dir, ['compare', 'zd.qcow2', 'zc.qcow2'], { status: 0 });
  });
  it('strict content mismatch', () => check(dir, ['compare', '-s', 'f.qcow2', 'a.qcow2'], { status: 1, stdout: `Content mismatch at offset ${2 * MiB}!\n` }));
  it('compressed clusters (compressible data)', async () => {
    const text = Buffer.from('compare compressible text\n'.repeat(40000));
    const { writeFileSync } = await import('node:fs');
    writeFileSync(dir.path('text.raw'), text.subarray(0, 1024 * 1024));
    convert(dir, 'text.raw', 'text-c.qcow2', 'qcow2', ['-c']);
    convert(dir, 'text.raw', 'text-c2.qcow2', 'qcow2', ['-c']);
    convert(dir, 'text.raw', 'text.qcow2', 'qcow2');
    convert(dir, 'text.raw', 'text.vhdx', 'vhdx');
    await check(dir, ['compare', '-s', '-p', 'text-c.qcow2', 'text-c2.qcow2'], { status: 0 });
    await check(dir, ['compare', '-s', 'text-c.qcow2', 'text.qcow2'], { status: 1, stdout: 'Strict mode: Offset 0 block status mismatch!\n' });
    await check(dir, ['compare', '-s', '-p', 'text-c.qcow2', 'text.vhdx'], { status: 1 });
    await check(dir, ['compare', '-p', '-F', 'raw', 'text-c.qcow2', 'text.raw'], { status: 0 });
  });
  it('a blank image against data', () => check(dir, ['compare', '-s', 'blank.qcow2', 'a.qcow2'], { status: 1, stdout: 'Strict mode: Offset 0 block status mismatch!\n' }));
});
