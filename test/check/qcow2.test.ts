// `check` on qcow2 images of every kind qemu-img makes (versions, cluster and refcount widths,
// compression, snapshots, bitmaps, extended L2, data file, encryption, backing file): instar
// against qemu-img 7.2 and 10.0, human and JSON, stdout, stderr and exit status byte for byte.
import { after, before, test } from 'node:test';
import { ImageDir, assertSameOutput } from '../differential/harness.ts';

const images = new ImageDir('check-qcow2');
const KEY = ['--object', 'secret,id=sec0,data=abc'];

/** Each image: how to build it (in the image directory, with qemu-img 7.2's tools). */
const IMAGES: Record<string, (d: ImageDir) => void> = {
  'empty.qcow2': (d) => d.img('create', '-q', '-f', 'qcow2', 'empty.qcow2', '64M'),
  'data.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', 'data.qcow2', '64M');
    d.io('-c', 'write -P 1 0 1M', '-c', 'write -P 2 10M 64k', '-c', 'write -z 20M 1M', 'data.qcow2');
  },
  'v2.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '16M');
    d.io('-c', 'write -P 1 0 3M', '-c', 'write -z 4M 1M', 'v2.qcow2');
  },
  'compressed.qcow2': (d) => d.img('convert', '-c', '-O', 'qcow2', 'data.qcow2', 'compressed.qcow2'),
  'zstd.qcow2': (d) => d.img('convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'data.qcow2', 'zstd.qcow2'),
  'snapshots.qcow2': (d) => {
    d.img('convert', '-O', 'qcow2', 'data.qcow2', 'snapshots.qcow2');
    d.img('snapshot', '-c', 's1', 'snapshots.qcow2');
    d.io('-c', 'write -P 3 512k 2M', 'snapshots.qcow2');
    d.img('snapshot', '-c', 's2', 'snapshots.qcow2');
  },
  'bitmaps.qcow2': (d) => {
    d.img('convert', '-O', 'qcow2', 'data.qcow2', 'bitmaps.qcow2');
    d.img('bitmap', '--add', 'bitmaps.qcow2', 'b1');
    d.img('bitmap', '--add', '-g', '1M', 'bitmaps.qcow2', 'b2');
  },
  'extended-l2.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', 'extended-l2.qcow2', '16M');
    d.io('-c', 'write -P 1 0 100k', '-c', 'write -P 2 1M 4k', '-c', 'write -z 2M 64k', 'extended-l2.qcow2');
  },
  'data-file.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'data_file=data-file.raw', 'data-file.qcow2', '16M');
    d.io('-c', 'write -P 1 0 1M', 'data-file.qcow2');
  },
  'refcount1.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', 'refcount1.qcow2', '16M');
    d.io('-c', 'write -P 1 0 1M', 'refcount1.qcow2');
  },
  'refcount64.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=64', 'refcount64.qcow2', '16M');
    d.io('-c', 'write -P 1 0 1M', 'refcount64.qcow2');
  },
  'c512.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'c512.qcow2', '4M');
    d.io('-c', 'write -P 1 0 1M', '-c', 'write 2M 5k', 'c512.qcow2');
  },
  'c2m.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', 'c2m.qcow2', '64M');
    d.io('-c', 'write -P 1 0 1M', 'c2m.qcow2');
  },
  'fragmented.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', 'fragmented.qcow2', '8M');
    // Written backwards inside one L2 table: every cluster after the first is out of place.
    d.io(...[7, 5, 3, 1, 6, 2].flatMap((i) => ['-c', `write -P ${i} ${i * 8}k 4k`]), 'fragmented.qcow2');
  },
  'prealloc-metadata.qcow2': (d) => d.img('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', 'prealloc-metadata.qcow2', '64M'),
  'prealloc-full.qcow2': (d) => d.img('create', '-q', '-f', 'qcow2', '-o', 'preallocation=full', 'prealloc-full.qcow2', '8M'),
  'backed.qcow2': (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-b', 'data.qcow2', '-F', 'qcow2', 'backed.qcow2');
    d.io('-c', 'write -P 5 1M 64k', 'backed.qcow2');
  },
  'petabyte.qcow2': (d) => d.img('create', '-q', '-f', 'qcow2', 'petabyte.qcow2', '1P'),
  'luks.qcow2': (d) => d.img('create', '-q', '-f', 'qcow2', ...KEY, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', 'luks.qcow2', '16M'),
};

before(() => {
  for (const build of Object.values(IMAGES)) build(images);
});
after(() => images.remove());

for (const file of Object.keys(IMAGES)) {
  if (file === 'luks.qcow2') continue;
  test(`check ${file}`, async () => {
    await assertSameOutput(images.dir, ['check', file]);
    await assertSameOutput(images.dir, ['check', '--output=json', file]);
  });
}

test('check of an encrypted qcow2 needs its key; with it, the image checks clean', async () => {
  await assertSameOutput(images.dir, ['check', 'luks.qcow2']);
  await assertSameOutput(images.dir, ['check', ...KEY, '--image-opts', 'driver=qcow2,file.filename=luks.qcow2,encrypt.key-secret=sec0']);
});

test('check in the default sandbox: clean, snapshots, data file, backing chain', async () => {
  for (const file of ['data.qcow2', 'snapshots.qcow2', 'data-file.qcow2', 'backed.qcow2']) {
    await assertSameOutput(images.dir, ['check', '--output=json', file], { sandboxed: true });
  }
});

test('check options: -q, -U, -T, -f, --image-opts', async () => {
  await assertSameOutput(images.dir, ['check', '-q', 'data.qcow2']);
  await assertSameOutput(images.dir, ['check', '-q', '--output=json', 'data.qcow2']);
  await assertSameOutput(images.dir, ['check', '-U', '-T', 'none', '-f', 'qcow2', 'data.qcow2']);
  await assertSameOutput(images.dir, ['check', '--output=json', '--image-opts', 'driver=qcow2,file.filename=data.qcow2']);
});
