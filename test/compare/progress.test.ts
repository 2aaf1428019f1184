// compare -p: qemu prints "    (NN.NN/100%)\r" on stdout from 0.00, a new line only past 2% more,
// and a final "\n", interleaved with compare's own lines. Also a few runs in the default sandbox.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ImageDir, MiB, SIZE, check, convert, writeRaw } from './fixture.ts';
import { runInstar } from '../helpers/oracles.ts';

describe('compare -p', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('compare-progress');
    writeRaw(dir, 'a.raw');
    writeRaw(dir, 'f.raw', [3 * MiB + 5]);
    writeRaw(dir, 'long.raw', [], SIZE + 3 * MiB);
    convert(dir, 'a.raw', 'a.qcow2', 'qcow2');
    convert(dir, 'a.raw', 'a4k.qcow2', 'qcow2', ['-o', 'cluster_size=4096']);
    convert(dir, 'long.raw', 'long.qcow2', 'qcow2');
    // A larger disk with scattered data: many steps of different lengths.
    dir.img('create', '-q', '-f', 'qcow2', 'big.qcow2', '200M');
    const writes = [0, 7, 13, 50, 51, 52, 99, 150, 199].flatMap((m) => ['-c', `write -P ${m + 1} ${m * MiB + 4096} ${64 * 1024 + 512}`]);
    dir.io(...writes, 'big.qcow2');
    dir.img('convert', '-O', 'qcow2', 'big.qcow2', 'big-copy.qcow2');
    dir.img('convert', '-O', 'raw', 'big.qcow2', 'big.raw');
  });
  after(() => dir.remove());

  it('identical raw and qcow2', () => check(dir, ['compare', '-p', '-f', 'raw', 'a.raw', 'a.qcow2'], { status: 0, stdout: /^ {4}\(0\.00\/100%\)\r.*Images are identical\.\n\n$/s }));
  it('identical qcow2 with different cluster sizes', () => check(dir, ['compare', '-p', 'a4k.qcow2', 'a.qcow2'], { status: 0 }));
  it('a mismatch after some progress', () => check(dir, ['compare', '-p', '-f', 'raw', '-F', 'raw', 'f.raw', 'a.raw'], { status: 1, stdout: /\(0\.00\/100%\)\r.*Content mismatch at offset 3145728!\n\n$/s }));
  it('size mismatch, both orders', async () => {
    await check(dir, ['compare', '-p', 'a.qcow2', 'long.qcow2'], { status: 0, stdout: /Warning: Image size mismatch!\n.*Images are identical\.\n\n$/s });
    await check(dir, ['compare', '-p', '-f', 'raw', 'long.raw', 'a.qcow2'], { status: 0 });
  });
  it('strict refusals', async () => {
    await check(dir, ['compare', '-p', '-s', 'a.qcow2', 'long.qcow2'], { status: 1, stdout: '    (0.00/100%)\rStrict mode: Image size mismatch!\n\n' });
    await check(dir, ['compare', '-p', '-s', '-F', 'raw', 'a.qcow2', 'a.raw'], { status: 1 });
  });
  it('raw files made by qemu-img create (all hole) against blank and shorter images', async () => {
    dir.img('create', '-q', '-f', 'raw', 'hole.raw', String(SIZE));
    dir.img('create', '-q', '-f', 'raw', 'hole-long.raw', String(SIZE + 2 * MiB));
    dir.img('create', '-q', '-f', 'qcow2', 'blank.qcow2', String(SIZE));
    await check(dir, ['compare', '-p', '-f', 'raw', 'hole.raw', 'blank.qcow2'], { status: 0, stdout: '    (0.00/100%)\r    (100.00/100%)\rImages are identical.\n\n' });
    await check(dir, ['compare', '-p', '-f', 'raw', '-F', 'raw', 'hole.raw', 'hole-long.raw'], { status: 0 });
    await check(dir, ['compare', '-p', '-s', '-f', 'raw', 'hole.raw', 'blank.qcow2'], { status: 1 });
    await check(dir, ['compare', '-p', '-f', 'raw', '-F', 'raw', 'hole.raw', 'a.raw'], { status: 1, stdout: /Content mismatch at offset 0!\n\n$/ });
  });
  it('-q turns progress off', () => check(dir, ['compare', '-p', '-q', 'a.qcow2', 'long.qcow2'], { status: 0, stdout: '' }));
  it('an open error still ends the line', () => check(dir, ['compare', '-p', 'a.qcow2', 'nope.qcow2'], { status: 2, stdout: '\n' }));
  it('a larger disk with scattered data', async () => {
    await check(dir, ['compare', '-p', 'big.qcow2', 'big-copy.qcow2'], { status: 0, stdout: /( {4}\(\d+\.\d\d\/100%\)\r){5}/ });
    await check(dir, ['compare', '-p', '-F', 'raw', 'big.qcow2', 'big.raw'], { status: 0 });
    await check(dir, ['compare', '-p', 'big.qcow2', 'a.qcow2'], { status: 1 });
  });
});

describe('compare in the default sandbox', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('compare-sandbox');
    writeRaw(dir, 'a.raw');
    writeRaw(dir, 'f.raw', [SIZE - 1]);
    convert(dir, 'a.raw', 'base.qcow2', 'qcow2');
    dir.img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'overlay.qcow2');
    convert(dir, 'f.raw', 'f.vmdk', 'vmdk');
    dir.img('create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', 'orphan.qcow2', '5M');
  });
  after(() => dir.remove());

  const sandboxed = { sandboxed: true };
  it('identical, through a backing file', () => check(dir, ['compare', '-p', 'overlay.qcow2', 'base.qcow2'], { status: 0 }, sandboxed));
  it('a difference in the last byte', () => check(dir, ['compare', 'f.vmdk', 'overlay.qcow2'], { status: 1, stdout: `Content mismatch at offset ${SIZE - 512}!\n` }, sandboxed));
  it('strict', () => check(dir, ['compare', '-s', '-F', 'raw', 'overlay.qcow2', 'a.raw'], { status: 1 }, sandboxed));
  it('a missing backing file', () => check(dir, ['compare', 'base.qcow2', 'orphan.qcow2'], { status: 2 }, sandboxed));
  it('runs in the sandbox by default (the debug output names its layers)', () => {
    const r = runInstar(['compare', '--debug', 'overlay.qcow2', 'base.qcow2'], { cwd: dir.dir });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'Images are identical.\n');
    assert.match(r.stderr, /sandbox/i);
  });
});
