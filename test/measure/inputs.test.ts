// `measure` over input images against both oracles: formats instar reads (raw sparse, qcow2 with
// a backing chain, compressed, preallocated, extended L2, data file, vmdk, vpc, vhdx, vdi, qed,
// parallels, qcow), internal snapshots (-l), persistent bitmaps, JSON and human. A few run through
// the default sandbox, not only in-process.
import { after, before, test } from 'node:test';
import { readFileSync, writeFileSync } from 'node:fs';
import { ImageDir, assertSameOutput } from '../differential/harness.ts';

const images = new ImageDir('measure-inputs');

before(() => {
  const img = (...a: string[]) => images.img(...a);
  const io = (...a: string[]) => images.io(...a);
  img('create', '-q', '-f', 'qcow2', 'base.qcow2', '64M');
  io('-c', 'write -P 1 0 3M', '-c', 'write -P 2 20M 70k', 'base.qcow2');
  img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2');
  io('-c', 'write -P 3 10M 1M', '-c', 'write -z 0 1M', 'top.qcow2');
  img('snapshot', '-c', 's1', 'top.qcow2');
  io('-c', 'write -P 5 30M 5M', 'top.qcow2');
  img('convert', '-c', '-O', 'qcow2', 'base.qcow2', 'comp.qcow2');
  for (const [fmt, name, extra] of [['vmdk', 'b.vmdk', []], ['vmdk', 'bs.vmdk', ['-o', 'subformat=streamOptimized']], ['vpc', 'b.vpc', []],
    ['vhdx', 'b.vhdx', []], ['vdi', 'b.vdi', []], ['qed', 'b.qed', []], ['parallels', 'b.hds', []], ['qcow', 'b.qcow', []]] as const) {
    img('convert', '-O', fmt, ...extra, 'base.qcow2', name);
  }
  img('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', 'pm.qcow2', '10M');
  img('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', 'el.qcow2', '10M');
  io('-c', 'write 4k 4k', 'el.qcow2');
  img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,compat=0.10', 'small.qcow2', '10M');
  io('-c', 'write 1000 10', 'small.qcow2');
  img('create', '-q', '-f', 'qcow2', '-o', 'data_file=df.raw', 'df.qcow2', '10M');
  io('-c', 'write 0 100k', 'df.qcow2');
  img('create', '-q', '-f', 'qcow2', 'bm.qcow2', '1G');
  img('bitmap', '--add', 'bm.qcow2', 'n'.repeat(300));
  img('bitmap', '--add', '-g', '512', 'bm.qcow2', 'fine');
  img('bitmap', '--add', '-g', '2G', 'bm.qcow2', 'coarse');
  img('bitmap', '--add', 'bm.qcow2', '\u00fcn\u00ef');
  img('create', '-q', '-f', 'qcow2', '-u', '-b', 'nosuch.qcow2', '-F', 'qcow2', 'missing-backing.qcow2', '10M');
  // Raw: data in a few places of a sparse file, and a size that is no multiple of anything.
  images.sparse('sparse.raw', 7 * 1024 * 1024);
  io('-f', 'raw', '-c', 'write 70000 1', '-c', 'write 3000000 1', '-c', 'write 6M 1M', 'sparse.raw');
  images.sparse('odd.raw', 1000001);
  io('-f', 'raw', '-c', 'write 999424 512', 'odd.raw');
  // A flat VMDK of 2^54 bytes: more than instar's readers represent; it must fail clearly.
  writeFileSync(images.path('flat.bin'), '');
  const descriptor = (sectors: string) =>
    `# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW ${sectors} FLAT "flat.bin" 0\n\nddb.virtualHWVersion = "4"\n`;
  writeFileSync(images.path('huge.vmdk'), descriptor('18014398509481983'));
  // 2^55 sectors: the byte size wraps to 0 in qemu's int64 and its size query fails (EFBIG).
  writeFileSync(images.path('wrapped.vmdk'), descriptor('36028797018963968'));
  // A qcow2 whose first L1 entry points at an unaligned L2 table: block status fails there.
  img('create', '-q', '-f', 'qcow2', 'bad-l1.qcow2', '10M');
  io('-c', 'write 0 64k', '-c', 'write 5M 64k', 'bad-l1.qcow2');
  const bytes = readFileSync(images.path('bad-l1.qcow2'));
  const l1 = Number(bytes.readBigUInt64BE(40));
  bytes.writeBigUInt64BE(bytes.readBigUInt64BE(l1) + 0x200n, l1);
  writeFileSync(images.path('bad-l1.qcow2'), bytes);
});
after(() => images.remove());

const INPUTS = ['base.qcow2', 'top.qcow2', 'comp.qcow2', 'b.vmdk', 'bs.vmdk', 'b.vpc', 'b.vhdx', 'b.vdi', 'b.qed', 'b.hds', 'b.qcow',
  'pm.qcow2', 'el.qcow2', 'small.qcow2', 'df.qcow2', 'bm.qcow2'];
const TARGETS: string[][] = [
  ['-O', 'raw'],
  ['-O', 'qcow2'],
  ['-O', 'qcow2', '-o', 'cluster_size=512'],
  ['-O', 'qcow2', '-o', 'cluster_size=2M,extended_l2=on'],
  ['--output=json', '-O', 'qcow2', '-o', 'compat=0.10'],
  ['--output=json', '-O', 'qcow2', '-o', 'cluster_size=4k,refcount_bits=64'],
  ['-O', 'qcow2', '-o', 'backing_file=x'],
];

for (const input of INPUTS) {
  test(`measure ${input} to raw and qcow2 of several geometries`, async () => {
    for (const target of TARGETS) await assertSameOutput(images.dir, ['measure', ...target, input]);
  });
}

test('measure raw inputs: only the clusters around their data count', async () => {
  for (const input of ['sparse.raw', 'odd.raw']) {
    for (const target of TARGETS) await assertSameOutput(images.dir, ['measure', '-f', 'raw', ...target, input]);
  }
});

test('measure -l: an internal snapshot instead of the active disk, and its failures', async () => {
  for (const snap of ['s1', '1', 'snapshot.name=s1', 'snapshot.id=1', 'snapshot.id=1,snapshot.name=s1', 'snapshot.id=2', 'nosuch', 'snapshot.foo=1']) {
    await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', '-l', snap, 'top.qcow2']);
  }
  await assertSameOutput(images.dir, ['measure', '-l', 's1', '-f', 'raw', 'top.qcow2']);
  await assertSameOutput(images.dir, ['measure', '-l', 's1', 'b.vmdk']);
});

test('measure: a missing backing file, a format that is not the file, an unknown --image-opts option', async () => {
  await assertSameOutput(images.dir, ['measure', 'missing-backing.qcow2']);
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', '-o', 'backing_file=x', 'missing-backing.qcow2']);
  await assertSameOutput(images.dir, ['measure', '-f', 'qcow2', 'b.vmdk']);
  await assertSameOutput(images.dir, ['measure', '--image-opts', 'driver=qcow2,file.filename=base.qcow2,foo=bar']);
});

test('measure through the default sandbox: backing chain, bitmaps, snapshot, raw, an error', async () => {
  const sandboxed = { sandboxed: true };
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', 'top.qcow2'], sandboxed);
  await assertSameOutput(images.dir, ['measure', '--output=json', '-O', 'qcow2', 'bm.qcow2'], sandboxed);
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', '-l', 's1', 'top.qcow2'], sandboxed);
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', '-f', 'raw', 'sparse.raw'], sandboxed);
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', 'b.vmdk'], sandboxed);
  await assertSameOutput(images.dir, ['measure', 'missing-backing.qcow2'], sandboxed);
});

test('measure: a failing block status is an error only for a measure that walks (and its notice appears only then)', async () => {
  for (const target of [['-O', 'qcow2'], ['-O', 'raw'], ['-O', 'qcow2', '-o', 'backing_file=x'], ['-O', 'qcow2', '-o', 'preallocation=full']]) {
    await assertSameOutput(images.dir, ['measure', ...target, 'bad-l1.qcow2']);
  }
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', 'bad-l1.qcow2'], { sandboxed: true });
});

test('measure: a disk too large to count (a flat VMDK of 2^63 bytes) fails as qemu does, with no number', async () => {
  await assertSameOutput(images.dir, ['measure', '-O', 'qcow2', 'huge.vmdk']);
  await assertSameOutput(images.dir, ['measure', '-O', 'raw', 'huge.vmdk']);
});

test('measure: an input whose size query fails (a VMDK of 2^55 sectors) gets the wording of each target format', async () => {
  for (const target of [['-O', 'raw'], ['-O', 'qcow2'], ['-O', 'qcow2', '-o', 'backing_file=x'], ['-O', 'vmdk']]) {
    await assertSameOutput(images.dir, ['measure', ...target, 'wrapped.vmdk']);
  }
  await assertSameOutput(images.dir, ['measure', '--object', 'secret,id=s0,data=x', '-O', 'luks', '-o', 'key-secret=s0', 'wrapped.vmdk'], { sandboxed: true });
});

test('measure: errors come in qemu order (open, -l, -O, -o, the measure itself)', async () => {
  const lines = [
    ['--image-opts', '-f', 'qcow2', 'driver=qcow2,file.filename=base.qcow2'],
    ['--image-opts', 'driver=qcow2,file.filename=nosuch'],
    ['-f', 'file', '-O', 'qcow2', 'sparse.raw'],
    ['-o', 'cluster_size=3k', '-O', 'qcow2', 'nosuch'],
    ['-l', 'nosuch', '-O', 'foo', 'top.qcow2'],
    ['-l', 's1', '-O', 'qcow2', '-o', 'cluster_size=3k', 'top.qcow2'],
    ['-O', 'foo', '-o', 'cluster_size=3k', 'base.qcow2'],
    ['-O', 'vmdk', '-o', 'foo=1', 'base.qcow2'],
    ['-O', 'qcow2', '-o', 'foo=1,cluster_size=3k', 'base.qcow2'],
  ];
  for (const line of lines) await assertSameOutput(images.dir, ['measure', ...line]);
});
