// compare over huge sparse images: qemu steps through a sparse vmdk one 64 KiB grain at a time
// (2 TiB = 32 Mi block-status calls, over 10 s); instar, when neither -p nor -s makes the steps
// visible, skips regions both images read as zeros in long strides. Differential on 64 GiB images
// (zero regions before, between and after data; zeroed grains; a size mismatch tail), then a
// 2 TiB pair through instar alone, which must answer in a few seconds (qemu-img needs > 10 s).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { ImageDir, check } from './fixture.ts';
import { runInstar } from '../helpers/oracles.ts';

const GiB = 1024 * 1024 * 1024;
const DATA_AT = 40 * GiB;
/** A byte changed 4 KiB + 1000 into the data: qemu reports the start of its 512-byte sector. */
const CHANGED_AT = DATA_AT + 4096 + 1000;
const CHANGED_SECTOR = CHANGED_AT - (CHANGED_AT % 512);

describe('compare: 64 GiB sparse images, against both oracles', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('compare-huge');
    dir.img('create', '-q', '-f', 'vmdk', 'a.vmdk', '64G');
    dir.io('-c', `write -P 7 ${DATA_AT} 64k`, 'a.vmdk');
    copyFileSync(dir.path('a.vmdk'), dir.path('b.vmdk'));
    dir.io('-c', `write -P 8 ${CHANGED_AT} 1`, 'b.vmdk');
    dir.img('create', '-q', '-f', 'qcow2', 'c.qcow2', '64G');
    dir.io('-c', `write -P 7 ${DATA_AT} 64k`, 'c.qcow2');
    // Zeroed grains (allocated, reading as zeros) where the others have unallocated ones.
    dir.img('create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', 'z.vmdk', '64G');
    dir.io('-c', `write -z 0 ${GiB}`, '-c', `write -P 7 ${DATA_AT} 64k`, '-c', `write -z ${50 * GiB} ${GiB}`, 'z.vmdk');
    dir.sparse('small.raw', 1024 * 1024);
  });
  after(() => dir.remove());

  it('an image and itself', () => check(dir, ['compare', 'a.vmdk', 'a.vmdk'], { status: 0, stdout: 'Images are identical.\n' }));
  it('a byte changed far into the disk', () => check(dir, ['compare', 'a.vmdk', 'b.vmdk'], { status: 1, stdout: `Content mismatch at offset ${CHANGED_SECTOR}!\n` }));
  it('vmdk and qcow2 with the same data', () => check(dir, ['compare', 'a.vmdk', 'c.qcow2'], { status: 0 }));
  it('zeroed grains against unallocated ones', () => check(dir, ['compare', 'z.vmdk', 'c.qcow2'], { status: 0 }));
  it('qcow2 and the changed vmdk', () => check(dir, ['compare', 'c.qcow2', 'b.vmdk'], { status: 1 }));
  it('a small raw file against the big vmdk: the tail is walked too', () =>
    check(dir, ['compare', '-f', 'raw', 'small.raw', 'a.vmdk'], { status: 1, stdout: `Warning: Image size mismatch!\nContent mismatch at offset ${DATA_AT}!\n` }));
  // -s compares every step's status (EOF included): there instar keeps qemu's steps.
  it('-s walks qemu\'s steps: the status mismatch near the end (EOF bit) is found where qemu finds it', () =>
    check(dir, ['compare', '-s', 'a.vmdk', 'c.qcow2'], { status: 1, stdout: `Strict mode: Offset ${63.5 * GiB} block status mismatch!\n` }));
});

describe('compare: 2 TiB sparse vmdk in a few seconds', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('compare-2t');
    dir.img('create', '-q', '-f', 'vmdk', 'big.vmdk', '2T');
    dir.io('-c', `write -P 7 ${1536 * GiB} 64k`, 'big.vmdk');
    copyFileSync(dir.path('big.vmdk'), dir.path('changed.vmdk'));
    dir.io('-c', `write -P 8 ${1536 * GiB + 512} 1`, 'changed.vmdk');
    dir.sparse('small.raw', 1024 * 1024);
  });
  after(() => dir.remove());

  // qemu-img takes 17 s for the first, instar took 33 s before it strode over zero regions.
  const cases: [string, string[], number, string][] = [
    ['itself', ['big.vmdk', 'big.vmdk'], 0, 'Images are identical.\n'],
    ['a changed byte at 1.5 TiB', ['big.vmdk', 'changed.vmdk'], 1, `Content mismatch at offset ${1536 * GiB + 512}!\n`],
    ['a 1 MiB raw file (a 2 TiB tail)', ['-f', 'raw', '-F', 'vmdk', 'small.raw', 'big.vmdk'], 1, `Warning: Image size mismatch!\nContent mismatch at offset ${1536 * GiB}!\n`],
  ];
  for (const [name, args, status, stdout] of cases) {
    it(name, { timeout: 60_000 }, () => {
      const r = runInstar(['compare', ...args], { cwd: dir.dir, timeoutMs: 20_000 });
      assert.equal(r.signal, null, 'instar ran over 20 s');
      assert.equal(r.stderr, '');
      assert.equal(r.stdout, stdout);
      assert.equal(r.status, status);
    });
  }
});
