// `info` usage errors and unopenable files: same message, same exit status as qemu-img.
import { after, before, test } from 'node:test';
import { ImageDir, assertSameOutput } from './harness.ts';

const images = new ImageDir('info-errors');

before(() => {
  images.sparse('plain.raw', 4096);
  images.img('create', '-f', 'qcow2', 'image.qcow2', '1M');
  images.mkdir('a-directory');
});

after(() => images.remove());

const CASES: [string, string[]][] = [
  ['missing file', ['info', 'nosuch.qcow2']],
  ['missing file, json', ['info', '--output=json', 'nosuch.qcow2']],
  ['missing file in a missing directory', ['info', 'no/such.qcow2']],
  ['no file name', ['info']],
  ['two file names', ['info', 'image.qcow2', 'plain.raw']],
  ['bad --output', ['info', '--output=xml', 'image.qcow2']],
  ['bad --output without a file name', ['info', '--output=yaml']],
  ['bad then good --output', ['info', '--output=xml', '--output=json', 'image.qcow2']],
  ['wrong -f', ['info', '-f', 'qcow2', 'plain.raw']],
  ['unknown -f', ['info', '-f', 'nosuchformat', 'plain.raw']],
  ['unknown -f, missing file', ['info', '-f', 'nosuchformat', 'nosuch.raw']],
  ['a directory', ['info', 'a-directory']],
  ['--image-opts with -f', ['info', '--image-opts', '-f', 'raw', 'driver=raw,file.filename=plain.raw']],
  ['--image-opts naming a node', ['info', '--image-opts', 'image.qcow2']],
  ['--image-opts, missing file', ['info', '--image-opts', 'driver=qcow2,file.filename=nosuch.qcow2']],
  ['--image-opts, wrong driver', ['info', '--image-opts', 'driver=qcow2,file.filename=plain.raw']],
  ['--image-opts, unknown format option', ['info', '--image-opts', 'driver=qcow2,file.filename=image.qcow2,bogus=1']],
  ['--image-opts, unknown option, probed format', ['info', '--image-opts', 'file.filename=image.qcow2,bogus=1']],
  ['--image-opts, unknown protocol option first', ['info', '--image-opts', 'driver=qcow2,bogus=2,file.filename=image.qcow2,file.x=1']],
  ['--image-opts, driver=file with an unknown option', ['info', '--image-opts', 'driver=file,filename=plain.raw,bog=1']],
  ['--image-opts without a file', ['info', '--image-opts', 'driver=qcow2']],
];

test('--image-opts options that change nothing keep the plain name', async () => {
  await assertSameOutput(images.dir, ['info', '--image-opts', 'driver=raw,file.filename=plain.raw,file.locking=off,read-only=on,cache.direct=off,node-name=n']);
  await assertSameOutput(images.dir, ['info', '--output=json', '--image-opts', 'driver=file,filename=plain.raw,locking=off']);
});

test('-U and --object are accepted', async () => {
  await assertSameOutput(images.dir, ['info', '-U', '--object', 'secret,id=s0,data=x', 'image.qcow2']);
});

for (const [name, args] of CASES) {
  test(`info error: ${name}`, async () => await assertSameOutput(images.dir, args));
}
