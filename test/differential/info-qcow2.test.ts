// `info` on qcow2 images of every kind qemu-img can make: instar against qemu-img 7.2 and 10.0,
// human and JSON. Images are built once, then every variant is compared in both output modes.
import { after, before, test } from 'node:test';
import { openSync, writeSync, closeSync } from 'node:fs';
import { ImageDir, assertSameOutput } from './harness.ts';

const images = new ImageDir('info-qcow2');

/** Sets bits in the low byte of the header's incompatible_features (offset 72, big-endian u64). */
function setIncompatibleBits(file: string, bits: number): void {
  const fd = openSync(images.path(file), 'r+');
  try {
    writeSync(fd, Buffer.from([bits]), 0, 1, 79);
  } finally {
    closeSync(fd);
  }
}

interface Variant {
  file: string;
  build: () => void;
}

const create = (file: string, size: string, ...opts: string[]) => () => {
  images.img('create', '-f', 'qcow2', ...(opts.length ? ['-o', opts.join(',')] : []), file, size);
};

const VARIANTS: Variant[] = [
  { file: 'default.qcow2', build: create('default.qcow2', '64M') },
  { file: 'v2.qcow2', build: create('v2.qcow2', '64M', 'compat=0.10') },
  { file: 'v3.qcow2', build: create('v3.qcow2', '64M', 'compat=1.1') },
  { file: 'odd-size.qcow2', build: create('odd-size.qcow2', '1000000') },
  { file: 'c512.qcow2', build: create('c512.qcow2', '16M', 'cluster_size=512') },
  { file: 'c4k.qcow2', build: create('c4k.qcow2', '16M', 'cluster_size=4k') },
  { file: 'c2m.qcow2', build: create('c2m.qcow2', '16M', 'cluster_size=2M') },
  ...[1, 2, 4, 8, 32, 64].map((bits) => ({ file: `rc${bits}.qcow2`, build: create(`rc${bits}.qcow2`, '16M', `refcount_bits=${bits}`) })),
  { file: 'lazy.qcow2', build: create('lazy.qcow2', '16M', 'lazy_refcounts=on') },
  { file: 'el2.qcow2', build: create('el2.qcow2', '16M', 'extended_l2=on') },
  { file: 'el2-c2m.qcow2', build: create('el2-c2m.qcow2', '16M', 'extended_l2=on', 'cluster_size=2M') },
  { file: 'zstd.qcow2', build: create('zstd.qcow2', '16M', 'compression_type=zstd') },
  { file: 'prealloc-metadata.qcow2', build: create('prealloc-metadata.qcow2', '8M', 'preallocation=metadata') },
  { file: 'prealloc-falloc.qcow2', build: create('prealloc-falloc.qcow2', '8M', 'preallocation=falloc') },
  { file: 'prealloc-full.qcow2', build: create('prealloc-full.qcow2', '8M', 'preallocation=full') },
  { file: 'huge.qcow2', build: create('huge.qcow2', '1P') },
  { file: 'v2-huge.qcow2', build: create('v2-huge.qcow2', '3T', 'compat=0.10') },
  {
    file: 'written.qcow2',
    build: () => {
      create('written.qcow2', '16M')();
      images.io('-c', 'write -P 0xab 0 64k', '-c', 'write -P 0xcd 5M 1M', '-c', 'write -z 8M 64k', 'written.qcow2');
    },
  },
  {
    file: 'compressed.qcow2',
    build: () => {
      images.img('create', '-f', 'raw', 'source.raw', '4M');
      images.io('-f', 'raw', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 2M 512k', 'source.raw');
      images.img('convert', '-c', '-O', 'qcow2', 'source.raw', 'compressed.qcow2');
    },
  },
  {
    file: 'compressed-zstd.qcow2',
    build: () => images.img('convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'source.raw', 'compressed-zstd.qcow2'),
  },
  {
    file: 'snapshots.qcow2',
    build: () => {
      create('snapshots.qcow2', '16M')();
      images.img('snapshot', '-c', 'first', 'snapshots.qcow2');
      images.io('-c', 'write -P 0x5a 0 128k', 'snapshots.qcow2');
      images.img('snapshot', '-c', 'second snapshot with a long name', 'snapshots.qcow2');
      images.img('snapshot', '-c', 'third', 'snapshots.qcow2');
      images.img('snapshot', '-d', 'first', 'snapshots.qcow2');
    },
  },
  {
    file: 'v2-snapshots.qcow2',
    build: () => {
      create('v2-snapshots.qcow2', '16M', 'compat=0.10')();
      images.img('snapshot', '-c', 'only', 'v2-snapshots.qcow2');
    },
  },
  {
    file: 'bitmaps.qcow2',
    build: () => {
      create('bitmaps.qcow2', '16M')();
      images.img('bitmap', '--add', 'bitmaps.qcow2', 'b0');
      images.img('bitmap', '--add', '--granularity', '128k', 'bitmaps.qcow2', 'b1');
      images.img('bitmap', '--add', '--disable', 'bitmaps.qcow2', 'disabled');
    },
  },
  {
    file: 'dirty.qcow2',
    build: () => {
      create('dirty.qcow2', '16M', 'lazy_refcounts=on')();
      setIncompatibleBits('dirty.qcow2', 0x01);
    },
  },
  {
    file: 'corrupt.qcow2',
    build: () => {
      create('corrupt.qcow2', '16M')();
      setIncompatibleBits('corrupt.qcow2', 0x02);
    },
  },
  {
    file: 'luks.qcow2',
    build: () => {
      // qemu-img 7.2 fails at random here while creating LUKS ("Unable to get accurate CPU usage").
      images.qemu(['create', '-f', 'qcow2', '--object', 'secret,id=s0,data=x', '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10',
        'luks.qcow2', '16M'], { retries: 30 });
    },
  },
  { file: 'data-file.qcow2', build: create('data-file.qcow2', '16M', 'data_file=data-file.data') },
  { file: 'data-file-raw.qcow2', build: create('data-file-raw.qcow2', '16M', 'data_file=data-file-raw.data', 'data_file_raw=on') },
  {
    file: 'data-file-written.qcow2',
    build: () => {
      create('data-file-written.qcow2', '4M', 'data_file=data-file-written.data')();
      images.io('-c', 'write -P 0x77 0 1M', 'data-file-written.qcow2');
    },
  },
  {
    file: 'everything.qcow2',
    build: () => {
      create('everything.qcow2', '32M', 'cluster_size=16k', 'refcount_bits=4', 'lazy_refcounts=on', 'compression_type=zstd')();
      images.io('-c', 'write -P 0x42 0 300k', 'everything.qcow2');
      images.img('snapshot', '-c', 'snap', 'everything.qcow2');
      images.img('bitmap', '--add', '--granularity', '32k', 'everything.qcow2', 'dirty-tracking');
    },
  },
];

before(() => {
  for (const v of VARIANTS) v.build();
});

after(() => images.remove());

for (const v of VARIANTS) {
  for (const output of ['human', 'json']) {
    test(`qcow2 ${v.file} --output=${output}`, async () => {
      await assertSameOutput(images.dir, ['info', `--output=${output}`, v.file]);
    });
  }
}

test('qcow2 with -f qcow2, -U and through --image-opts', async () => {
  await assertSameOutput(images.dir, ['info', '-f', 'qcow2', '-U', 'bitmaps.qcow2']);
  await assertSameOutput(images.dir, ['info', '--image-opts', 'driver=qcow2,file.filename=snapshots.qcow2']);
  await assertSameOutput(images.dir, ['info', '--output=json', '--image-opts', 'file.filename=v2.qcow2']);
});

test('snapshot dates follow the local time zone', async () => {
  for (const tz of ['Asia/Kolkata', 'America/New_York']) {
    await assertSameOutput(images.dir, ['info', 'snapshots.qcow2'], { env: { TZ: tz } });
  }
});
