// `check` on the other formats qemu-img can check (vdi, vmdk, qed, vhdx), clean and damaged, and
// on the formats it cannot (raw, vpc, qcow, luks: "This image format does not support checks",
// exit 63): instar against qemu-img 7.2 and 10.0, human and JSON, byte for byte.
import { after, before, test } from 'node:test';
import { copyFileSync, appendFileSync, closeSync, openSync, readSync, truncateSync, writeSync } from 'node:fs';
import { ImageDir, assertSameOutput } from '../differential/harness.ts';

const images = new ImageDir('check-formats');

function readU32LE(file: string, pos: number): number {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, pos);
    return b.readUInt32LE(0);
  } finally {
    closeSync(fd);
  }
}

function write(file: string, pos: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, pos);
  } finally {
    closeSync(fd);
  }
}

const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};
const u64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
};

/** A copy of `base` named `name`, edited by `damage` (given the copy's path). */
function damaged(base: string, name: string, damage: (path: string) => void): string {
  copyFileSync(images.path(base), images.path(name));
  damage(images.path(name));
  return name;
}

before(() => {
  for (const f of ['vdi', 'vmdk', 'qed', 'vhdx', 'vpc', 'qcow']) {
    images.img('create', '-q', '-f', f, `x.${f}`, '64M');
    images.io('-f', f, '-c', 'write -P 1 0 1M', '-c', 'write -P 2 5M 64k', `x.${f}`);
  }
  images.img('create', '-q', '-f', 'raw', 'x.raw', '1M');
  images.img('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'flat.vmdk', '10M');
  images.img('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'split.vmdk', '5G');
  images.io('-f', 'vmdk', '-c', 'write 3G 1M', 'split.vmdk');
  images.img('convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'x.vmdk', 'stream.vmdk');
  images.img('create', '-q', '-f', 'qed', 'frag.qed', '64M');
  for (const i of [5, 3, 1]) images.io('-f', 'qed', '-c', `write ${i * 64}k 64k`, 'frag.qed');
  images.img('create', '-q', '-f', 'vhdx', 'v.vhdx', '64M');
  images.io('-f', 'vhdx', '-c', 'write -P 3 0 20M', 'v.vhdx');
  images.img('create', '-q', '-f', 'parallels', 'empty.parallels', '64M');
  images.img('create', '-q', '-f', 'parallels', 'p.parallels', '64M');
  // Clusters 3, 1, 5 written in that order: BAT entries 1, 3, 5 name host clusters 1, 2, 3.
  for (const i of [3, 1, 5]) images.io('-f', 'parallels', '-c', `write ${i}M 4k`, 'p.parallels');
  // A cluster of 6 sectors (cluster_size=3000 rounds up): qemu 10.0 rounds the BAT's end up to it
  // with a mask meant for powers of two and calls the data_off its own create wrote wrong.
  images.img('create', '-q', '-f', 'parallels', '-o', 'cluster_size=3000', 'odd-cluster.parallels', '1M');
  images.img('create', '-q', '-f', 'parallels', '-o', 'cluster_size=3000', 'odd-cluster-3m.parallels', '3M');
  images.img('create', '-q', '-f', 'luks', '--object', 'secret,id=s,data=x', '-o', 'key-secret=s,iter-time=10', 'x.luks', '1M');
});
after(() => images.remove());

test('check of clean vdi, vmdk (sparse, flat, split, stream), qed, vhdx', async () => {
  for (const file of ['x.vdi', 'x.vmdk', 'flat.vmdk', 'split.vmdk', 'stream.vmdk', 'x.qed', 'frag.qed', 'x.vhdx']) {
    await assertSameOutput(images.dir, ['check', file]);
    await assertSameOutput(images.dir, ['check', '--output=json', file]);
  }
});

test('formats qemu cannot check: exit 63, human and JSON, also in the sandbox', async () => {
  for (const args of [['x.vpc'], ['x.qcow'], ['-f', 'raw', 'x.raw'], ['x.luks'], ['-f', 'vpc', '--output=json', 'x.vpc']]) {
    await assertSameOutput(images.dir, ['check', ...args]);
  }
  await assertSameOutput(images.dir, ['check', 'x.vpc'], { sandboxed: true });
});

test('damaged vdi: an entry used twice, an entry past the map, a wrong allocated count', async () => {
  const bmap = readU32LE(images.path('x.vdi'), 0x154);
  const cases = [
    damaged('x.vdi', 'twice.vdi', (f) => write(f, bmap + 4 * 5, u32(0))),
    damaged('x.vdi', 'too-large.vdi', (f) => write(f, bmap + 4 * 6, u32(999))),
    damaged('x.vdi', 'count.vdi', (f) => write(f, 0x184, u32(7))),
  ];
  for (const file of cases) {
    await assertSameOutput(images.dir, ['check', file]);
    await assertSameOutput(images.dir, ['check', '--output=json', file]);
  }
});

test('damaged vmdk: a grain past the end of the file, a flat extent past its file (the check fails)', async () => {
  // The grain directory's sector is the header's u64 at 56 (small here: its low half).
  const gd = readU32LE(images.path('x.vmdk'), 56);
  const gt = readU32LE(images.path('x.vmdk'), gd * 512);
  const file = damaged('x.vmdk', 'grain-eof.vmdk', (f) => write(f, gt * 512 + 4 * 3, u32(100_000_000)));
  await assertSameOutput(images.dir, ['check', file]);
  await assertSameOutput(images.dir, ['check', '--output=json', file], { sandboxed: true });
});

test('damaged qed: a cluster used twice, a cluster past the end, a bad L2 offset, leaked clusters', async () => {
  // The L1 table's offset is the header's u64 at 40.
  const l1 = readU32LE(images.path('x.qed'), 40);
  const l2Of = (f: string) => {
    const fd = openSync(f, 'r');
    try {
      const b = Buffer.alloc(8);
      readSync(fd, b, 0, 8, l1);
      return Number(b.readBigUInt64LE(0));
    } finally {
      closeSync(fd);
    }
  };
  const l2 = l2Of(images.path('x.qed'));
  const cases = [
    damaged('x.qed', 'twice.qed', (f) => write(f, l2 + 8, u64(327680n))),
    damaged('x.qed', 'past-end.qed', (f) => write(f, l2 + 16, u64(10n ** 12n))),
    damaged('x.qed', 'bad-l2.qed', (f) => write(f, l1 + 8, u64(12345n))),
    damaged('x.qed', 'leaks.qed', (f) => appendFileSync(f, Buffer.alloc(3 * 65536))),
  ];
  for (const file of cases) {
    await assertSameOutput(images.dir, ['check', file]);
    await assertSameOutput(images.dir, ['check', '--output=json', file]);
  }
});

test('parallels: clean, empty, duplicate cluster, bad data_off, unclean header, leaked tail, cluster past the end', async () => {
  const bat = (i: number) => 64 + 4 * i;
  const cases = [
    'p.parallels',
    'empty.parallels',
    'odd-cluster.parallels',
    'odd-cluster-3m.parallels',
    damaged('p.parallels', 'duplicate.parallels', (f) => write(f, bat(0), u32(readU32LE(f, bat(1))))),
    damaged('p.parallels', 'data-off.parallels', (f) => write(f, 48, u32(1))),
    damaged('p.parallels', 'unclean.parallels', (f) => write(f, 44, u32(0x746f6e59))),
    damaged('p.parallels', 'tail.parallels', (f) => appendFileSync(f, Buffer.alloc(1805696))),
  ];
  for (const file of cases) {
    await assertSameOutput(images.dir, ['check', file]);
    await assertSameOutput(images.dir, ['check', '--output=json', file]);
  }
  // qemu 10.0 aborts on a cluster past the end of the file (an assertion in its duplicate check).
  const outside = damaged('p.parallels', 'outside.parallels', (f) => write(f, bat(2), u32(100000)));
  await assertSameOutput(images.dir, ['check', outside], { versions: ['7.2'] });
});

test('damaged vhdx: truncated file, BAT entries into another region and past the end (qemu reports, does not refuse)', async () => {
  // qemu-img's vhdx puts the BAT at 2 MiB and the metadata region at 3 MiB.
  const bat = (i: number) => 2 * 1024 * 1024 + 8 * i;
  const cases = [
    damaged('v.vhdx', 'truncated.vhdx', (f) => truncateSync(f, 12 * 1024 * 1024)),
    damaged('v.vhdx', 'truncated-mid-block.vhdx', (f) => truncateSync(f, 9_000_000)),
    damaged('v.vhdx', 'overlap.vhdx', (f) => {
      write(f, bat(1), u64((3n << 20n) | 6n));
      write(f, bat(2), u64((1n << 40n) | 6n));
    }),
  ];
  for (const file of cases) {
    await assertSameOutput(images.dir, ['check', file]);
    await assertSameOutput(images.dir, ['check', '--output=json', file]);
  }
  await assertSameOutput(images.dir, ['check', 'overlap.vhdx'], { sandboxed: true });
});
