// compare's failures: files that cannot be opened (exit 2, image 1 before image 2), a wrong or
// unknown -f/-F, a missing backing file, bad -T, --image-opts, usage errors (exit 1), and the
// options accepted without effect (-U, --object, -T). Both oracles, byte for byte.
import { after, before, describe, it } from 'node:test';
import { ImageDir, check, convert, writeRaw } from './fixture.ts';

describe('compare: errors', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('compare-errors');
    writeRaw(dir, 'a.raw');
    convert(dir, 'a.raw', 'a.qcow2', 'qcow2');
    convert(dir, 'a.raw', 'a.vmdk', 'vmdk');
    dir.img('create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', 'orphan.qcow2', '5M');
    dir.mkdir('sub');
    convert(dir, 'a.raw', 'sub/base.qcow2', 'qcow2');
    dir.img('create', '-q', '-f', 'qcow2', '-b', 'sub/base.qcow2', '-F', 'qcow2', 'overlay.qcow2');
    dir.img('create', '-q', '-f', 'qcow2', '-u', '-b', 'orphan.qcow2', '-F', 'qcow2', 'deep.qcow2', '5M');
  });
  after(() => dir.remove());

  it('first file missing', () => check(dir, ['compare', 'nope.qcow2', 'a.qcow2'], { status: 2, stdout: '' }));
  it('second file missing', () => check(dir, ['compare', 'a.qcow2', 'nope.qcow2'], { status: 2, stdout: '' }));
  it('both missing: the first is named', () => check(dir, ['compare', 'nope1', 'nope2'], { status: 2 }));
  it('image 1 unreadable as its -f, image 2 missing: image 1 is named', () => check(dir, ['compare', '-f', 'qcow2', 'a.raw', 'nope'], { status: 2 }));
  it('image 1 missing its backing file, image 2 missing: image 1 is named', () => check(dir, ['compare', 'orphan.qcow2', 'nope'], { status: 2 }));
  it('wrong -f', () => check(dir, ['compare', '-f', 'qcow2', 'a.raw', 'a.qcow2'], { status: 2 }));
  it('wrong -F', () => check(dir, ['compare', 'a.qcow2', '-F', 'vmdk', 'a.qcow2'], { status: 2 }));
  it('unknown -F driver', () => check(dir, ['compare', '-F', 'nosuch', 'a.qcow2', 'a.qcow2'], { status: 2 }));
  it('-f naming another real format', () => check(dir, ['compare', '-f', 'vpc', 'a.vmdk', 'a.qcow2'], { status: 2 }));
  it('missing backing file in image 2', () => check(dir, ['compare', 'a.qcow2', 'orphan.qcow2'], { status: 2 }));
  it('missing backing file in image 1', () => check(dir, ['compare', 'orphan.qcow2', 'a.qcow2'], { status: 2 }));
  it('backing file in a subdirectory', () => check(dir, ['compare', 'overlay.qcow2', 'a.vmdk'], { status: 0 }));
  it('missing backing file two levels down in image 1', () => check(dir, ['compare', 'deep.qcow2', 'a.qcow2'], { status: 2 }));
  it('missing backing file two levels down', () => check(dir, ['compare', 'a.qcow2', 'deep.qcow2'], { status: 2 }));
  it('a directory', () => check(dir, ['compare', 'sub', 'a.qcow2'], { status: 2 }));
  it('one file name', () => check(dir, ['compare', 'a.qcow2'], { status: 1 }));
  it('three file names', () => check(dir, ['compare', 'a.qcow2', 'a.qcow2', 'a.qcow2'], { status: 1 }));
  it('bad -T', () => check(dir, ['compare', '-T', 'fast', 'a.qcow2', 'a.qcow2'], { status: 2 }));
  it('bad -T with -p still ends the progress line', () => check(dir, ['compare', '-p', '-T', 'fast', 'a.qcow2', 'a.qcow2'], { status: 2, stdout: '\n' }));
  it('-T, -U and --object are accepted', () =>
    check(dir, ['compare', '-T', 'none', '-U', '--object', 'secret,id=sec0,data=x', 'a.qcow2', 'a.vmdk'], { status: 0, stdout: 'Images are identical.\n' }));
  it('--image-opts', () => check(dir, ['compare', '--image-opts', 'driver=qcow2,file.filename=a.qcow2', 'driver=raw,file.filename=a.raw'], { status: 0 }));
  it('--image-opts with -f', () => check(dir, ['compare', '--image-opts', '-f', 'raw', 'driver=raw,file.filename=a.raw', 'a.raw'], { status: 2 }));
  it('--image-opts naming a missing file', () => check(dir, ['compare', '--image-opts', 'driver=qcow2,file.filename=a.qcow2', 'driver=raw,file.filename=nope'], { status: 2 }));
});
