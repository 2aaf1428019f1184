// `check` on damaged qcow2 images, made by editing the bytes of qemu-made ones: leaked clusters,
// refcounts too low, COPIED flags wrong, entries past the end of the file or not aligned, reserved
// bits, broken refcount blocks, overflowing refcounts, truncated files. Each is compared with
// qemu-img 7.2 and 10.0, human and JSON, stdout, stderr and exit status byte for byte.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, truncateSync } from 'node:fs';
import { ImageDir, assertSameOutput } from '../differential/harness.ts';
import { runInstar } from '../helpers/oracles.ts';
import { editU64, l1Entry, l2Entry, layout, readU64, setRefcount16, writeU64 } from './qcow2-edit.ts';

const images = new ImageDir('check-qcow2-damaged');
const COPIED = 1n << 63n;

before(() => {
  images.img('create', '-q', '-f', 'qcow2', 'base.qcow2', '64M');
  // 16 data clusters at 0..1M (clusters 4-19), one more at 10M (cluster 20).
  images.io('-c', 'write -P 1 0 1M', '-c', 'write -P 2 10M 64k', 'base.qcow2');
  images.img('convert', '-c', '-O', 'qcow2', 'base.qcow2', 'base-compressed.qcow2');
  images.img('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', 'base-rc1.qcow2', '16M');
  images.io('-c', 'write -P 1 0 1M', 'base-rc1.qcow2');
  images.img('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', 'base-el2.qcow2', '16M');
  images.io('-c', 'write -P 1 0 100k', 'base-el2.qcow2');
  images.img('create', '-q', '-f', 'qcow2', '-o', 'data_file=base-df.raw', 'base-df.qcow2', '16M');
  images.io('-c', 'write -P 1 0 1M', 'base-df.qcow2');
  images.img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'base-c512.qcow2', '4M');
  images.img('convert', '-O', 'qcow2', 'base.qcow2', 'base-snap.qcow2');
  images.img('snapshot', '-c', 's1', 'base-snap.qcow2');
  images.io('-c', 'write -P 3 512k 2M', 'base-snap.qcow2');
});
after(() => images.remove());

/** A damaged copy of a base image: `damage` edits the copy at `path`. */
function damaged(base: string, name: string, damage: (path: string) => void): string {
  copyFileSync(images.path(base), images.path(name));
  damage(images.path(name));
  return name;
}

const CASES: [name: string, base: string, damage: (f: string) => void][] = [
  ['leaked-refcount-bumped', 'base.qcow2', (f) => setRefcount16(f, 5, 2)],
  ['leaked-cluster-appended', 'base.qcow2', (f) => {
    truncateSync(f, 1441792 + 3 * 65536);
    setRefcount16(f, 23, 1);
  }],
  ['leaked-many', 'base.qcow2', (f) => {
    for (let c = 30; c < 300; c++) setRefcount16(f, c, 1);
    truncateSync(f, 30 * 1024 * 1024);
  }],
  ['corrupt-refcount-zero', 'base.qcow2', (f) => setRefcount16(f, 5, 0)],
  ['copied-missing-l2', 'base.qcow2', (f) => editU64(f, l2Entry(f, 0, 0), (v) => v & ~COPIED)],
  ['copied-missing-l1', 'base.qcow2', (f) => editU64(f, l1Entry(f, 0), (v) => v & ~COPIED)],
  ['l2-entry-past-eof', 'base.qcow2', (f) => writeU64(f, l2Entry(f, 0, 3), COPIED | (1n << 40n))],
  ['truncated', 'base.qcow2', (f) => truncateSync(f, 700000)],
  ['l1-unaligned', 'base.qcow2', (f) => editU64(f, l1Entry(f, 0), (v) => v + 512n)],
  ['l1-reserved-bits', 'base.qcow2', (f) => editU64(f, l1Entry(f, 0), (v) => v | (1n << 57n))],
  ['l2-reserved-bits', 'base.qcow2', (f) => editU64(f, l2Entry(f, 0, 1), (v) => v | 2n)],
  ['data-unaligned', 'base.qcow2', (f) => editU64(f, l2Entry(f, 0, 2), (v) => v + 512n)],
  ['zero-unaligned', 'base.qcow2', (f) => editU64(f, l2Entry(f, 0, 2), (v) => v + 513n)],
  // Entry 0 maps cluster 5 (0x50000); entry 1 now maps it too.
  ['cluster-shared', 'base.qcow2', (f) => writeU64(f, l2Entry(f, 0, 1), COPIED | 0x50000n)],
  ['refblock-unaligned', 'base.qcow2', (f) => editU64(f, layout(f).refTableOffset, (v) => v + 4096n)],
  ['reftable-reserved-bits', 'base.qcow2', (f) => editU64(f, layout(f).refTableOffset, (v) => v | 1n)],
  ['refblock-outside', 'base.qcow2', (f) => writeU64(f, layout(f).refTableOffset + 8, 1n << 40n)],
  ['compressed-copied', 'base-compressed.qcow2', (f) => editU64(f, l2Entry(f, 0, 0), (v) => v | COPIED)],
  // With 1-bit refcounts a second reference to a cluster overflows.
  ['refcount-overflow', 'base-rc1.qcow2', (f) => writeU64(f, l2Entry(f, 0, 1), readU64(f, l2Entry(f, 0, 0)))],
  ['subcluster-bitmap', 'base-el2.qcow2', (f) => {
    const l2 = l2Entry(f, 0, 0, 16);
    writeU64(f, l2 + 8, (1n << 64n) - 1n);
    writeU64(f, l2 + 16 * 40 + 8, 0xfn);
  }],
  ['data-file-compressed', 'base-df.qcow2', (f) => writeU64(f, l2Entry(f, 0, 3), (1n << 62n) | 0x50000n)],
  ['snapshot-l1-unaligned', 'base-snap.qcow2', (f) => editU64(f, layout(f).snapshotsOffset, (v) => v + 512n)],
  // The snapshot table itself: qemu-img check opens without it and fails the check reading it.
  ['snapshot-extra-data-too-big', 'base-snap.qcow2', (f) => editU64(f, layout(f).snapshotsOffset + 32, (v) => (v & ~0xffffffffn) | 2000n)],
  ['snapshot-table-offset-unaligned', 'base-snap.qcow2', (f) => editU64(f, 64, (v) => v + 8n)],
  ['snapshot-table-unreadable', 'base-snap.qcow2', (f) => writeU64(f, 64, (1n << 63n) - 0x100000n)],
  ['snapshot-count-70000', 'base-snap.qcow2', (f) => editU64(f, 56, (v) => (v & ~0xffffffffn) | 70000n)],
  ['snapshot-entry-past-eof', 'base-snap.qcow2', (f) => editU64(f, 56, (v) => (v & ~0xffffffffn) | 3n)],
];

for (const [name, base, damage] of CASES) {
  test(`check of a damaged qcow2: ${name}`, async () => {
    const file = damaged(base, `${name}.qcow2`, damage);
    await assertSameOutput(images.dir, ['check', file]);
    await assertSameOutput(images.dir, ['check', '--output=json', file]);
  });
}

test('damaged images in the default sandbox: leaks, corruption, broken refcount block', async () => {
  for (const name of ['leaked-refcount-bumped', 'corrupt-refcount-zero', 'refblock-unaligned']) {
    await assertSameOutput(images.dir, ['check', `${name}.qcow2`], { sandboxed: true });
  }
});

test('a file of more than INT_MAX clusters: qemu and instar fail the check (File too large)', async () => {
  const file = damaged('base-c512.qcow2', 'int-max.qcow2', (f) => truncateSync(f, 1500 * 1024 ** 3));
  await assertSameOutput(images.dir, ['check', file]);
});

test('a file of more clusters than instar counts (2^28): refused with a clear line, in bounded memory', () => {
  // 200 GiB of 512-byte clusters: qemu would allocate 800 MiB of counters; instar says no.
  const file = damaged('base-c512.qcow2', 'too-many.qcow2', (f) => truncateSync(f, 200 * 1024 ** 3));
  const r = runInstar(['check', file], { cwd: images.dir });
  assert.equal(r.status, 1);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, 'qemu-img: Check failed: File too large for instar (419430400 clusters, at most 268435456)\n');
});
