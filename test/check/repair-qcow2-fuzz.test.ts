// check -r on qemu-made qcow2 images damaged at random (refcounts set to small values, COPIED
// flags flipped, L1/L2 table bytes overwritten), against qemu-img 10.0: wherever instar repairs,
// the same output, exit status and repaired bytes as qemu's; wherever it refuses, one line and the file untouched. Seeded, so a
// failure names the case that reproduces it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu } from '../helpers/oracles.ts';
import { writeRefcount } from '../../src/formats/qcow2/refcount-entry.ts';
import { Rng } from '../fuzz/prng.ts';
import { RepairDirs } from './repair-harness.ts';

const dirs = new RepairDirs();
const seeds: { name: string; bytes: Buffer }[] = [];

function make(name: string, options: string, writes: string[], snapshot: boolean): void {
  const path = join(dirs.root, name);
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', options, path, '4M']).status, 0);
  for (const w of writes) assert.equal(runQemu('7.2', ['-c', w, path], {}, 'qemu-io').status, 0);
  if (snapshot) assert.equal(runQemu('7.2', ['snapshot', '-c', 's', path]).status, 0);
  seeds.push({ name, bytes: readFileSync(path) });
}

before(() => {
  make('a.qcow2', 'refcount_bits=16', ['write -P 1 0 320k', 'write -P 2 2M 64k'], true);
  make('b.qcow2', 'cluster_size=4096,refcount_bits=4', ['write -P 3 0 64k', 'write -P 4 1M 32k'], false);
});
after(() => dirs.remove());

/** One to three random damages to a copy of `seed`. */
function damage(seed: Buffer, rng: Rng): { bytes: Buffer; what: string[] } {
  const b = Buffer.from(seed);
  const cs = 2 ** b.readUInt32BE(20);
  const bits = 2 ** b.readUInt32BE(96);
  const perBlock = (cs * 8) / bits;
  const clusters = Math.ceil(b.length / cs);
  const reftable = Number(b.readBigUInt64BE(48));
  const l1 = Number(b.readBigUInt64BE(40));
  const l2 = Number(b.readBigUInt64BE(l1) & 0xfffffffffffe00n);
  const what: string[] = [];
  for (let n = 1 + rng.below(3); n > 0; n--) {
    if (rng.chance(0.7)) {
      const cluster = rng.below(clusters + 2);
      const block = Number(b.readBigUInt64BE(reftable + 8 * Math.floor(cluster / perBlock)) & ~0x1ffn);
      const value = rng.below(Math.min(4, 2 ** bits));
      if (block === 0) continue;
      writeRefcount(b.subarray(block, block + cs), cluster % perBlock, bits, value);
      what.push(`refcount of cluster ${cluster} = ${value}`);
    } else if (rng.chance(0.4)) {
      // A byte of the L1 table or the first L2 table: damage qemu may only report. (Not the refcount
      // table: qemu "repairs" a block offset past the end by growing the file up to it.)
      const at = rng.pick([l1, l2]) + rng.below(64);
      const value = rng.chance(0.5) ? rng.below(4) : rng.below(256);
      b[at] = value;
      what.push(`byte ${at} = ${value}`);
    } else {
      const j = rng.below(8);
      const at = l2 + 8 * j;
      b.writeBigUInt64BE(b.readBigUInt64BE(at) ^ (1n << 63n), at);
      what.push(`COPIED flag of L2 entry ${j} flipped`);
    }
  }
  return { bytes: b, what };
}

test('qcow2 check -r on randomly damaged refcounts and flags: qemu\'s output and bytes, or a refusal', () => {
  const rng = new Rng(20261128);
  let repaired = 0;
  let refusedCount = 0;
  for (let i = 0; i < 24; i++) {
    const seed = seeds[i % seeds.length];
    const { bytes, what } = damage(seed.bytes, rng);
    const mode = rng.chance(0.75) ? 'all' : 'leaks';
    const r = dirs.run('10.0', 'x.qcow2', bytes, ['check', '-r', mode, 'x.qcow2']);
    const label = `case ${i} (${seed.name}, -r ${mode}: ${what.join(', ')})`;
    if (r.instar.status === 1 && r.instar.stderr.includes('instar cannot repair')) {
      refusedCount++;
      assert.equal(r.instar.stdout, '', label);
      assert.ok(r.instarFile.equals(bytes), `${label}: a refusal writes nothing`);
      continue;
    }
    repaired++;
    assert.equal(r.instar.stderr, r.qemu.stderr, `${label}: stderr`);
    assert.equal(r.instar.stdout, r.qemu.stdout, `${label}: stdout`);
    assert.equal(r.instar.status, r.qemu.status, `${label}: exit status`);
    assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ after the repair`);
  }
  assert.ok(repaired >= 10, `most damage is repaired as qemu repairs it (${repaired} repaired, ${refusedCount} refused)`);
});
