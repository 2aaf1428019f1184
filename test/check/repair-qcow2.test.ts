// check -r on qcow2 images whose only damage is leaked clusters (refcounts above their references,
// set by editing a refcount block of a qemu-made image), against qemu-img 7.2 and 10.0: the same
// output, exit status and repaired bytes. Images that need repairs instar lacks are refused with nothing
// written; every prefix of a repair's writes leaves an image with leaks at most. Refcount errors,
// rebuilds and COPIED flags: repair-qcow2-errors.test.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, readSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { layout, readU64 } from './qcow2-edit.ts';
import { assertSameRun, repairPrefix } from './repair-harness.ts';
import { RepairDirs } from './fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import { LONG } from '../helpers/long.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;

/** Sets the refcount of `cluster`, whatever the image's refcount width. */
function setRefcount(file: string, cluster: number, value: bigint): void {
  const fd = openSync(file, 'r+');
  try {
    const head = Buffer.alloc(100);
    readSync(fd, head, 0, 100, 0);
    const bits = 2 ** head.readUInt32BE(96);
    const perBlock = (CLUSTER * 8) / bits;
    const block = Number(readU64(file, layout(file).refTableOffset + 8 * Math.floor(cluster / perBlock)) & ~0x1ffn);
    const i = cluster % perBlock;
    const at = block + Math.floor((i * bits) / 8);
    const b = Buffer.alloc(Math.max(1, bits / 8));
    readSync(fd, b, 0, b.length, at);
    if (bits < 8) {
      const shift = (i * bits) % 8;
      b[0] = (b[0] & ~((2 ** bits - 1) << shift)) | (Number(value) << shift);
    } else if (bits === 64) b.writeBigUInt64BE(value);
    else b.writeUIntBE(Number(value), 0, bits / 8);
    writeSync(fd, b, 0, b.length, at);
  } finally {
    closeSync(fd);
  }
}

/** A 10 MiB qcow2 with 200 KiB of data, grown to `clusters` clusters, with refcounts edited. */
function leaky(name: string, opts: { refcountBits?: number; clusters?: number; fill?: number[]; refcounts: [number, bigint][] }): Uint8Array {
  const path = join(dirs.root, name);
  const o = `refcount_bits=${opts.refcountBits ?? 16}`;
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', o, path, '10M']).status, 0);
  assert.equal(runQemu('7.2', ['-c', 'write -P 0x5 0 200k', path], {}, 'qemu-io').status, 0);
  truncateSync(path, (opts.clusters ?? 13) * CLUSTER);
  const fd = openSync(path, 'r+');
  for (const c of opts.fill ?? []) writeSync(fd, Buffer.alloc(CLUSTER, 0x77), 0, CLUSTER, c * CLUSTER);
  closeSync(fd);
  for (const [cluster, value] of opts.refcounts) setRefcount(path, cluster, value);
  return new Uint8Array(readFileSync(path));
}

const images: Record<string, Uint8Array> = {};

before(() => {
  images['leaks past the old end'] = leaky('a.qcow2', { refcounts: [[9, 1n], [10, 1n], [12, 1n]] });
  images['leaked clusters holding data (qemu discards them)'] = leaky('b.qcow2', { fill: [9, 11], refcounts: [[9, 1n], [11, 3n]] });
  images['an L1 table counted twice'] = leaky('c.qcow2', { refcounts: [[3, 2n]] });
  images['refcount_bits=1'] = leaky('d.qcow2', { refcountBits: 1, refcounts: [[9, 1n], [10, 1n]] });
  images['refcount_bits=4'] = leaky('e.qcow2', { refcountBits: 4, refcounts: [[9, 15n], [11, 2n]] });
  images['refcount_bits=64'] = leaky('f.qcow2', { refcountBits: 64, refcounts: [[10, 2n ** 60n]] });
});
after(() => dirs.remove());

const LINES = [
  ['check', '-r', 'leaks', 'x.qcow2'],
  ['check', '-r', 'all', '--output=json', 'x.qcow2'],
  ['check', '-q', '-r', 'all', 'x.qcow2'],
];

for (const [n, label] of ['leaks past the old end', 'leaked clusters holding data (qemu discards them)', 'an L1 table counted twice', 'refcount_bits=1', 'refcount_bits=4', 'refcount_bits=64'].entries()) {
  test(`qcow2 check -r: ${label}`, () => {
    const bytes = images[label];
    assert.equal(runQemu('10.0', ['check', join(dirs.root, 'a.qcow2')]).status, 3, 'the images have leaks');
    for (const [j, v] of VERSIONS.entries()) {
      for (const [i, args] of LINES.entries()) {
        // The three command lines repair the same leaks and differ in the mode's name and how the
        // result is printed: the short tier runs one per image and release, in turn (each line
        // under both releases over the images); the long tier all three.
        if (!LONG && i !== (2 * n + j) % LINES.length) continue;
        const r = dirs.run(v, 'x.qcow2', bytes, args, { sandboxed: i === 0 });
        const name = `${label}, qemu-img ${v} ${args.join(' ')}`;
        assertSameRun(r, name);
        assert.ok(r.instarFile.equals(r.qemuFile), `${name}: the repaired files differ`);
        assert.equal(runQemu(v, ['check', r.instarPath]).status, 0, `${name}: qemu-img check after instar's repair`);
      }
    }
  });
}

test('qcow2 check -r refuses images that need table repairs, writing nothing', () => {
  // A preallocated zero cluster's entry pointing inside a cluster (qemu's fix mode turns it into a
  // plain zero cluster, which instar does too: repair-more-prealloc.test.ts) in an image whose
  // refcounts also need a rebuild: instar refuses that combination.
  const bytes = leaky('g.qcow2', { refcounts: [[9, 1n], [6, 0n]] });
  const path = join(dirs.root, 'g.qcow2');
  const l2Offset = Number(readU64(path, layout(path).l1Offset) & 0xfffffffffffe00n);
  const damaged = Buffer.from(bytes);
  damaged.writeBigUInt64BE(damaged.readBigUInt64BE(l2Offset) | 0x201n, l2Offset);
  const r = dirs.run('10.0', 'x.qcow2', damaged, ['check', '-r', 'all', 'x.qcow2'], { sandboxed: true });
  assert.equal(r.instar.status, 1);
  assert.equal(r.instar.stdout, '');
  assert.equal(r.instar.stderr, 'qemu-img: instar cannot repair this qcow2 image (its misaligned preallocated clusters would need a rebuild or lie in snapshots); nothing was written\n');
  assert.ok(r.instarFile.equals(damaged), 'the file is unchanged');
  assert.notEqual(r.qemu.stderr, '', 'qemu reports (and repairs) it');
});

test('qcow2 leak repair: every prefix of its writes leaves an image with leaks at most', () => {
  const bytes = leaky('h.qcow2', { clusters: 40, fill: [9, 20, 30], refcounts: [[9, 1n], [20, 2n], [30, 1n], [31, 1n]] });
  const full = dirs.run('10.0', 'x.qcow2', bytes, ['check', '-r', 'all', 'x.qcow2']);
  assert.equal(full.qemu.status, 0);
  const path = join(dirs.root, 'prefix.qcow2');
  let total = -1;
  for (let n = 0; total < 0 || n <= total; n++) {
    total = repairPrefix(path, bytes, n);
    for (const v of VERSIONS) {
      const status = runQemu(v, ['check', path]).status;
      assert.ok(status === 0 || status === 3, `after ${n} of ${total} writes, qemu-img ${v} check exits ${status}`);
    }
    const copy = `${path}.fixed`;
    writeFileSync(copy, readFileSync(path));
    assert.equal(runQemu('7.2', ['check', '-r', 'all', copy]).status, 0);
    // The same disk contents and a clean image (a freed cluster keeps its old bytes when the cut
    // fell between the refcount write and its zeroing: no longer a leak, qemu leaves it).
    assert.equal(runQemu('7.2', ['compare', full.qemuPath, copy]).stdout, 'Images are identical.\n', `after ${n} writes`);
    if (n === 0 || n === total) assert.ok(readFileSync(copy).equals(full.qemuFile), `after ${n} writes, the same bytes as qemu's repair`);
  }
  assert.equal(total, 4, 'one refcount block, then the freed clusters in three runs (9, 20, 30-31)');
});
