// check -r on qcow2 images with refcount errors (stored refcounts below the references), with
// stored refcounts of 0 or broken refcount-table entries (qemu rebuilds the whole refcount
// structure), with wrong COPIED flags and dirty (lazy refcounts), against qemu-img 7.2 and 10.0: the same output, exit
// status and repaired bytes. A rebuild cut after any of its writes leaves an image qemu-img still
// opens: the old damage before the header names the new structure, leaks at most after it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { readRefcount, writeRefcount } from '../../src/formats/qcow2/refcount-entry.ts';
import { RepairDirs, assertSameRun, repairPrefix } from './repair-harness.ts';

const dirs = new RepairDirs();

interface Edit {
  /** Refcounts to set: [cluster, value]. */
  refcounts?: [number, bigint][];
  /** Bits to flip in the refcount table entry 0. */
  reftableXor?: bigint;
  /** Clear the COPIED flag of the first L1 entry / of L2 entry `n` of the first table. */
  clearL1Copied?: boolean;
  clearL2Copied?: number[];
  /** Bits to flip in L2 entry [0] of the first table. */
  l2Xor?: [number, bigint];
}

/** A qemu-made qcow2 (`create` options, qemu-io writes, snapshots), then edited as `edit` says. */
function build(name: string, options: string, writes: string[], edit: Edit, snapshot = false): Buffer {
  const path = join(dirs.root, name);
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', options, path, '16M']).status, 0);
  for (const w of writes) assert.equal(runQemu('7.2', ['-c', w, path], {}, 'qemu-io').status, 0);
  if (snapshot) assert.equal(runQemu('7.2', ['snapshot', '-c', 's1', path]).status, 0);
  const b = readFileSync(path);
  const cs = 2 ** b.readUInt32BE(20);
  const bits = 2 ** b.readUInt32BE(96);
  const perBlock = (cs * 8) / bits;
  const reftable = Number(b.readBigUInt64BE(48));
  for (const [cluster, value] of edit.refcounts ?? []) {
    const block = Number(b.readBigUInt64BE(reftable + 8 * Math.floor(cluster / perBlock)) & ~0x1ffn);
    writeRefcount(b.subarray(block, block + cs), cluster % perBlock, bits, value);
  }
  if (edit.reftableXor) b.writeBigUInt64BE(b.readBigUInt64BE(reftable) ^ edit.reftableXor, reftable);
  const l1 = Number(b.readBigUInt64BE(40));
  const l2 = Number(b.readBigUInt64BE(l1) & 0xfffffffffffe00n);
  if (edit.clearL1Copied) b.writeBigUInt64BE(b.readBigUInt64BE(l1) & ~(1n << 63n), l1);
  for (const j of edit.clearL2Copied ?? []) b.writeBigUInt64BE(b.readBigUInt64BE(l2 + 8 * j) & ~(1n << 63n), l2 + 8 * j);
  if (edit.l2Xor) b.writeBigUInt64BE(b.readBigUInt64BE(l2 + 8 * edit.l2Xor[0]) ^ edit.l2Xor[1], l2 + 8 * edit.l2Xor[0]);
  return b;
}

/** The refcount of `cluster` as stored in `b`. */
function refcountOf(b: Buffer, cluster: number): number | bigint {
  const cs = 2 ** b.readUInt32BE(20);
  const bits = 2 ** b.readUInt32BE(96);
  const perBlock = (cs * 8) / bits;
  const block = Number(b.readBigUInt64BE(Number(b.readBigUInt64BE(48)) + 8 * Math.floor(cluster / perBlock)) & ~0x1ffn);
  return readRefcount(b.subarray(block, block + cs), cluster % perBlock, bits);
}

const images: Record<string, Buffer> = {};

before(() => {
  // Cluster 5 is data (refcount 0 under its reference: a rebuild), cluster 6 leaks.
  images['a stored refcount of 0 under a reference (rebuild)'] = build('a.qcow2', 'refcount_bits=16', ['write -P 1 0 256k'], { refcounts: [[5, 0n], [6, 2n]] });
  images['the L2 table counted 0 with refcount_bits=1 (rebuild)'] = build('b.qcow2', 'refcount_bits=1', ['write -P 2 0 128k', 'write -P 3 1M 64k'], { refcounts: [[4, 0n]] });
  images['refcount_bits=64 (rebuild)'] = build('c.qcow2', 'refcount_bits=64', ['write -P 2 0 128k'], { refcounts: [[5, 0n], [3, 5n]] });
  // The rebuild's first free cluster is the uncounted old block: qemu's overlap check stops it.
  images['reserved bits in a refcount table entry'] = build('d.qcow2', 'refcount_bits=16', ['write -P 4 64k 64k'], { reftableXor: 0x100n });
  // 512-byte clusters and 64-bit refcounts: 64 refcounts per block, a table of several clusters.
  images['many refcount blocks, a table of several clusters (rebuild)'] = build('e.qcow2', 'cluster_size=512,refcount_bits=64', ['write -P 5 0 3M', 'write -P 6 8M 1M'], { refcounts: [[7, 0n]] });
  // Lazy refcounts, qemu-io killed after its writes: dirty, data clusters with refcount 0.
  const lazy = join(dirs.root, 'lazy.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', lazy, '16M']).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 1 0 256k', '-c', 'write -P 2 4M 64k', '-c', 'sigraise 9', lazy], {}, 'qemu-io').signal, 'SIGKILL');
  images['lazy refcounts after a crash (dirty, rebuild)'] = readFileSync(lazy);
  // Dirty but consistent: only the bit to clear.
  const clean = build('j.qcow2', 'lazy_refcounts=on', ['write -P 3 0 64k'], {});
  clean.writeBigUInt64BE(clean.readBigUInt64BE(72) | 1n, 72);
  images['a dirty image with nothing to repair'] = clean;
  images['crash'] = build('i.qcow2', 'cluster_size=512,refcount_bits=16', ['write -P 5 0 1M'], { refcounts: [[9, 0n], [12, 3n]] });
  // Snapshot-shared data clusters hold refcount 2; one set to 1 is an error -r all raises again.
  images['a refcount below its references (no rebuild)'] = build('f.qcow2', 'refcount_bits=16', ['write -P 7 0 192k'], { refcounts: [[6, 1n]] }, true);
  images['COPIED flags cleared'] = build('g.qcow2', 'refcount_bits=16', ['write -P 8 0 192k'], { clearL1Copied: true, clearL2Copied: [0, 2] });
  // Damage qemu only reports (a data cluster entry pointing inside a cluster), beside what it repairs.
  images['an unaligned data cluster entry and a leak'] = build('k.qcow2', 'refcount_bits=16', ['write -P 4 0 192k'], { l2Xor: [1, 0x200n], refcounts: [[3, 2n]] });
  images['an unaligned data cluster entry and a rebuild'] = build('l.qcow2', 'refcount_bits=16', ['write -P 5 0 192k'], { l2Xor: [2, 0x400n], refcounts: [[5, 0n]] });
  images['COPIED flags cleared and a leak'] = build('h.qcow2', 'refcount_bits=16', ['write -P 9 0 128k'], { clearL2Copied: [1], refcounts: [[3, 2n]] });
});
after(() => dirs.remove());

const LINES = [
  ['check', '-r', 'all', 'x.qcow2'],
  ['check', '-r', 'leaks', '--output=json', 'x.qcow2'],
];

for (const label of [
  'a stored refcount of 0 under a reference (rebuild)',
  'the L2 table counted 0 with refcount_bits=1 (rebuild)',
  'refcount_bits=64 (rebuild)',
  'many refcount blocks, a table of several clusters (rebuild)',
  'a refcount below its references (no rebuild)',
  'lazy refcounts after a crash (dirty, rebuild)',
  'a dirty image with nothing to repair',
  'COPIED flags cleared',
  'COPIED flags cleared and a leak',
  'an unaligned data cluster entry and a leak',
  'an unaligned data cluster entry and a rebuild',
]) {
  test(`qcow2 check -r: ${label}`, () => {
    const bytes = images[label];
    for (const v of VERSIONS) {
      for (const [i, args] of LINES.entries()) {
        const r = dirs.run(v, 'x.qcow2', bytes, args, { sandboxed: i === 0 && v === '10.0' });
        const name = `${label}, qemu-img ${v} ${args.join(' ')}`;
        assertSameRun(r, name);
        assert.ok(r.instarFile.equals(r.qemuFile), `${name}: the files differ after the repair`);
      }
    }
  });
}

test('the damage is what each case says it is', () => {
  assert.equal(refcountOf(images['a stored refcount of 0 under a reference (rebuild)'], 5), 0);
  const plain = dirs.run('10.0', 'x.qcow2', images['a refcount below its references (no rebuild)'], ['check', 'x.qcow2']);
  assert.match(plain.qemu.stderr, /^ERROR cluster 6 refcount=1 reference=2$/m);
  assert.equal(images['lazy refcounts after a crash (dirty, rebuild)'].readBigUInt64BE(72) & 1n, 1n, 'the crashed image is dirty');
  for (const label of ['an unaligned data cluster entry and a leak', 'an unaligned data cluster entry and a rebuild']) {
    const r = dirs.run('10.0', 'x.qcow2', images[label], ['check', '-r', 'all', 'x.qcow2']);
    assert.match(r.qemu.stderr, /Data cluster is not properly aligned; L2 entry corrupted/, label);
    assert.equal(r.qemu.status, 2, `${label}: qemu repairs what it can and still reports the corruption`);
  }
  const flags = dirs.run('10.0', 'x.qcow2', images['COPIED flags cleared'], ['check', 'x.qcow2']);
  assert.match(flags.qemu.stderr, /ERROR OFLAG_COPIED L2 cluster/);
  assert.match(flags.qemu.stderr, /ERROR OFLAG_COPIED data cluster/);
});

test('a rebuild that would write over the old refcount block is refused (qemu fails it and marks the image corrupt)', () => {
  const bytes = images['reserved bits in a refcount table entry'];
  for (const v of VERSIONS) {
    const r = dirs.run(v, 'x.qcow2', bytes, ['check', '-r', 'all', 'x.qcow2']);
    assert.equal(r.qemu.status, 1);
    assert.match(r.qemu.stderr, /Marking image as corrupt/);
    assert.equal(r.instar.status, 1);
    assert.equal(r.instar.stderr, 'qemu-img: instar cannot repair this qcow2 image (its rebuild would write over the old refcount structure, which qemu refuses and then marks the image corrupt); nothing was written\n');
    assert.ok(r.instarFile.equals(bytes), 'nothing written');
  }
});

test('a rebuild cut after any of its writes leaves an image qemu-img opens, with leaks at most once switched', () => {
  const bytes = images['crash'];
  const path = join(dirs.root, 'prefix.qcow2');
  writeFileSync(path, bytes);
  const before = runQemu('10.0', ['check', '--output=json', path]);
  const reftableAt = bytes.readBigUInt64BE(48);
  let total = -1;
  let switched = 0;
  for (let n = 0; total < 0 || n <= total; n++) {
    total = repairPrefix(path, bytes, n);
    const now = readFileSync(path);
    for (const v of n === 0 || n === total ? VERSIONS : (['10.0'] as const)) {
      const r = runQemu(v, ['check', '--output=json', path]);
      if (now.readBigUInt64BE(48) === reftableAt) {
        // Not switched yet: the same report as the damaged image's (new blocks sit in free space).
        const strip = (s: string) => s.replace(/"filename": "[^"]*"/, '').replace(/"image-end-offset": \d+/, '');
        if (v === '10.0') assert.equal(strip(r.stdout), strip(before.stdout), `after ${n} of ${total} writes`);
        assert.equal(r.status, 2, `after ${n} of ${total} writes, qemu-img ${v} check still finds the old damage`);
      } else {
        switched++;
        assert.ok(r.status === 0 || r.status === 3, `after ${n} of ${total} writes, qemu-img ${v} check exits ${r.status}: ${r.stderr}`);
      }
    }
  }
  assert.ok(total > 5 && switched > 0, `a rebuild of many blocks (${total} writes), switched at some point`);
});
