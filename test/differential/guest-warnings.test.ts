// What qemu prints on stderr besides its final error, and how a failure part-way through a
// read-only command ends: qcow2's corruption notice before the error, compare's read errors
// ("Error while reading offset N of FILE", exit 4) and block-status errors ("Sector allocation test
// failed", exit 3), map's entries printed up to the failure (JSON ones with their ","), and a
// multi-line error (qemu's hint line) kept on its lines. Images are damaged copies of images the
// oracle made; each case runs against both oracles, in-process and (some) sandboxed.
import { after, before, test } from 'node:test';
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { ImageDir, assertSameOutput } from './harness.ts';

const images = new ImageDir('guest-warnings');

/** Rewrites the 64-bit big-endian word at `at` of a copy of `from`. */
function patched(from: string, to: string, at: number, value: (old: bigint) => bigint): void {
  const bytes = readFileSync(images.path(from));
  bytes.writeBigUInt64BE(value(bytes.readBigUInt64BE(at)), at);
  writeFileSync(images.path(to), bytes);
}

const l1Offset = (name: string) => Number(readFileSync(images.path(name)).readBigUInt64BE(40));
/** The host offset of the L2 table of L1 entry `index`. */
const l2Offset = (name: string, index: number) => Number(readFileSync(images.path(name)).readBigUInt64BE(l1Offset(name) + 8 * index) & 0x00fffffffffffe00n);

before(() => {
  // 4 KiB clusters: one L2 table covers 2 MiB, so an 8 MiB image has several.
  images.img('create', '-f', 'qcow2', '-o', 'cluster_size=4096', 'good.qcow2', '8M');
  images.io('-c', 'write -P 1 0 1M', '-c', 'write -P 2 3M 1M', '-c', 'write -P 3 5M 64k', 'good.qcow2');
  // The second L2 table's offset off its cluster alignment: qemu calls the image corrupt there.
  patched('good.qcow2', 'l1-unaligned.qcow2', l1Offset('good.qcow2') + 8, (e) => e + 0x200n);
  // A compressed cluster whose stream is garbage (it points at plain data): reads fail with EIO.
  const l2 = l2Offset('good.qcow2', 0);
  const dataAt = Number(readFileSync(images.path('good.qcow2')).readBigUInt64BE(l2) & 0x00fffffffffffe00n);
  patched('good.qcow2', 'bad-compressed.qcow2', l2 + 8 * 16, () => (1n << 62n) | BigInt(dataAt));
  images.img('create', '-f', 'qcow2', 'small.qcow2', '4M');
  // 600 snapshots with 64 KiB ids and names: a table over qemu's 64 MiB limit, which qemu refuses
  // with a hint on a line of its own.
  const head = readFileSync(images.path('small.qcow2'));
  head.writeUInt32BE(600, 60);
  head.writeBigUInt64BE(0x100000n, 64);
  const fd = openSync(images.path('bigsnap.qcow2'), 'w');
  try {
    writeSync(fd, head, 0, head.length, 0);
    const entry = Buffer.alloc(40);
    entry.writeUInt16BE(65535, 12);
    entry.writeUInt16BE(65535, 14);
    let at = 0x100000;
    for (let i = 0; i < 600; i++) {
      at = Math.ceil(at / 8) * 8;
      writeSync(fd, entry, 0, 40, at);
      at += 40 + 2 * 65535;
    }
    writeSync(fd, Buffer.alloc(1), 0, 1, at);
  } finally {
    closeSync(fd);
  }
});

after(() => images.remove());

test('compare: a read error is "Error while reading offset N of FILE" with exit 4', async () => {
  await assertSameOutput(images.dir, ['compare', 'good.qcow2', 'bad-compressed.qcow2']);
  await assertSameOutput(images.dir, ['compare', 'bad-compressed.qcow2', 'good.qcow2']);
  await assertSameOutput(images.dir, ['compare', '-f', 'qcow2', '-F', 'qcow2', 'bad-compressed.qcow2', 'good.qcow2'], { sandboxed: true });
});

test('compare: a block-status failure is "Sector allocation test failed", exit 3, after qcow2\'s notice', async () => {
  await assertSameOutput(images.dir, ['compare', 'l1-unaligned.qcow2', 'good.qcow2']);
  await assertSameOutput(images.dir, ['compare', 'good.qcow2', 'l1-unaligned.qcow2'], { sandboxed: true });
});

for (const output of ['human', 'json']) {
  test(`map --output=${output}: entries up to the failure, qcow2's notice, then the error`, async () => {
    await assertSameOutput(images.dir, ['map', `--output=${output}`, 'l1-unaligned.qcow2']);
    await assertSameOutput(images.dir, ['map', `--output=${output}`, 'l1-unaligned.qcow2'], { sandboxed: true });
  });
}

test('a multi-line error keeps its hint line (info, map, compare; sandboxed too)', async () => {
  await assertSameOutput(images.dir, ['info', 'bigsnap.qcow2']);
  await assertSameOutput(images.dir, ['map', 'bigsnap.qcow2'], { sandboxed: true });
  await assertSameOutput(images.dir, ['compare', 'small.qcow2', 'bigsnap.qcow2'], { sandboxed: true });
});
