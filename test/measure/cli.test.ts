// `measure`'s command line against both oracles: the argument rules in qemu's order, --size
// over many sizes (0, odd, qemu's limits, overflow), -O lookups and every qcow2 -o option that
// changes the result or fails, with --size and with an input image.
import { after, before, test } from 'node:test';
import { ImageDir, assertSameOutput } from '../differential/harness.ts';
import { tiered } from '../helpers/long.ts';

const images = new ImageDir('measure-cli');

before(() => {
  images.img('create', '-q', '-f', 'qcow2', 'a.qcow2', '100M');
  images.io('-c', 'write 0 1M', '-c', 'write 5M 100k', '-c', 'write -z 10M 1M', 'a.qcow2');
});
after(() => images.remove());

const ARGUMENT_LINES: string[][] = [
  ['measure'],
  ['measure', 'a.qcow2', 'b.qcow2'],
  ['measure', '--size', '1G', 'a.qcow2'],
  ['measure', '-f', 'raw'],
  ['measure', '-l', 'snap'],
  ['measure', '--image-opts'],
  ['measure', 'missing.qcow2'],
  ['measure', '-O', 'nosuch', 'missing.qcow2'],
  ['measure', '-f', 'vmdk', 'a.qcow2'],
  ['measure', '-f', 'nosuch', 'a.qcow2'],
  ['measure', '--image-opts', 'a.qcow2'],
  ['measure', '--image-opts', 'driver=qcow2,file.filename=a.qcow2', '-O', 'qcow2'],
  ['measure', '--output=xml', '--size', '1G'],
  ['measure', '--size', 'y', '--output=xml'],
  ['measure', '--output=xml', '--size', 'y'],
  ['measure', '--size', '1G', '--output=human', '--output=json'],
  ['measure', '-o', ',', '--size', 'x'],
  ['measure', '--size', 'x', '-o', ','],
  ['measure', '-o', 'a=1,', '--size', '1G'],
  ['measure', '-o', 'a=1,,', '--size', '1G'],
  ['measure', '-l', 'snapshot.foo=1', '--size', 'y'],
  ['measure', '--object', 'secret,id=s', '--size', '1G'],
  ['measure', '--size', '1G', '--object', 'foo,id=s'],
  ['measure', '-U', '--size', '1G'],
  ['measure', '--size', '1G', '-O', 'vmdk'],
  ['measure', '--size', '1G', '-O', 'vhdx'],
  ['measure', '--size', '1G', '-O', 'qcow'],
  ['measure', '--size', '1G', '-O', 'file'],
  ['measure', '--size', '1G', '-O', 'bochs'],
  ['measure', '--size', '1G', '-O', 'dmg'],
  ['measure', '--size', '1G', '-O', 'iso'],
  ['measure', '--size', '1G', '-O', 'nosuch'],
  ['measure', '-O', 'vmdk', 'a.qcow2'],
];

const SIZES = ['0', '1', '511', '512', '513', '1000001', '0x10', '1b', '1K', '1.5k', '1.5', '1M', '3G', '2P', '1E', '2E', '3E', '8E',
  '9223372036854775807', '9223372036854775808', '18446744073709551616', '-1', '1x', '', ' 4k', '0x1k'];

const OPTION_SETS = [
  'cluster_size=512', 'cluster_size=1k', 'cluster_size=3k', 'cluster_size=2M', 'cluster_size=4M', 'cluster_size=0', 'cluster_size=0.5M',
  'cluster_size=abc', 'cluster_size=-1', 'cluster_size=16E', 'cluster_size=9E', 'cluster_size=', 'cluster_size=64k,cluster_size=2M',
  'compat=0.10', 'compat=1.1', 'compat=v3', 'compat=', 'refcount_bits=1', 'refcount_bits=64', 'refcount_bits=3', 'refcount_bits=0',
  'refcount_bits=128', 'refcount_bits=0x10', 'refcount_bits=010', 'refcount_bits=16 ', 'refcount_bits=-1', 'refcount_bits=99999999999999999999',
  'refcount_bits=1,compat=0.10', 'refcount_bits=16,compat=0.10', 'refcount_bits=64,cluster_size=512', 'refcount_bits=1,cluster_size=2M',
  'extended_l2=on', 'extended_l2=yes', 'extended_l2=ON', 'extended_l2=on,cluster_size=2k', 'extended_l2=on,cluster_size=16k',
  'extended_l2=on,compat=0.10', 'extended_l2=on,cluster_size=2M,refcount_bits=2',
  'preallocation=metadata', 'preallocation=falloc', 'preallocation=full', 'preallocation=xx', 'preallocation=',
  'backing_file=b', 'backing_file=b,preallocation=full', 'lazy_refcounts', 'nolazy_refcounts', 'lazy_refcounts=x',
  'lazy_refcounts=on,lazy_refcounts=x', 'lazy_refcounts=x,lazy_refcounts=on', 'data_file=d,data_file_raw=on', 'compression_type=zstd',
  'encryption=on', 'encrypt.format=aes', 'encrypt.format=luks', 'nocow', 'nonocow', 'extent_size_hint=1M', 'size=1G', 'size=x',
  'help', 'a', '=x',
];

for (const args of ARGUMENT_LINES) {
  test(`qemu-img ${args.join(' ')}`, async () => {
    await assertSameOutput(images.dir, args);
  });
}

test('measure --size over many sizes, raw and qcow2, human and JSON', async () => {
  // The long tier takes every size; the short tier every other one (each kind still met).
  for (const size of tiered(SIZES, (v) => SIZES.indexOf(v) % 2 === 0)) {
    for (const format of ['raw', 'qcow2']) {
      await assertSameOutput(images.dir, ['measure', '-O', format, '--size', size]);
    }
    await assertSameOutput(images.dir, ['measure', '--output=json', '-O', 'qcow2', '-o', 'cluster_size=2M', '--size', size]);
  }
});

test('measure -O qcow2 -o: every option that changes the result or fails, with --size', async () => {
  for (const options of OPTION_SETS) await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', '--size', '1G', '-o', options]);
});

test('measure -O qcow2 -o: the same options over an input image', async () => {
  // The option checks are --size's (above); with an input the short tier takes every fourth set.
  for (const options of tiered(OPTION_SETS, (o) => OPTION_SETS.indexOf(o) % 4 === 0)) await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', 'a.qcow2', '-o', options]);
});

test('measure -O raw -o: raw takes only its own and the file protocol options', async () => {
  for (const options of ['size=5', 'preallocation=full', 'nocow=on', 'cluster_size=64k', 'extent_size_hint=x']) {
    await assertSameOutput(images.dir, ['measure', '-O', 'raw', '--size', '1G', '-o', options]);
  }
});

test('measure: -o size is checked against the L1 limit even when an input decides the size', async () => {
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', '-o', 'size=1E', 'a.qcow2']);
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', '-o', 'size=18446744073709551615', 'a.qcow2']);
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', '-o', 'size=1E', '--size', '1G']);
});

test('measure -O of a format that cannot measure: -o is checked against its create options first', async () => {
  const lines = [
    ['-O', 'vmdk', '-o', 'foo=bar'], ['-O', 'vmdk', '-o', 'subformat=xx,zeroed_grain=on'], ['-O', 'vmdk', '-o', 'zeroed_grain=x'],
    ['-O', 'vpc', '-o', 'size=x'], ['-O', 'vhdx', '-o', 'log_size=1M,block_state_zero=off'], ['-O', 'vdi', '-o', 'static=on'],
    ['-O', 'qed', '-o', 'table_size=x'], ['-O', 'parallels', '-o', 'cluster_size=1M'], ['-O', 'qcow', '-o', 'encryption=on'],
    ['-O', 'file', '-o', 'foo=1'], ['-O', 'nbd', '-o', 'nocow=x'], ['-O', 'bochs', '-o', 'foo=1'],
  ];
  for (const line of lines) await assertSameOutput(images.dir, ['measure', '--size', '1G', ...line]);
});
