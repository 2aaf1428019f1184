// Randomized commit chains (seeded): cluster sizes, qcow2 versions, refcount widths, writes, zero
// writes and discards in base and top. qemu's mirror job allocates in an order its timing
// decides, so the base is compared by guest data and qemu-img check, the emptied top byte for byte.
// COMMIT_SEEDS=n runs more seeds (a campaign; the short tier runs 3, the long tier 30).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';
import { LONG } from '../helpers/long.ts';
import { TwinDirs } from '../rebase/harness.ts';
import { ImageBuilder, assertCheckClean, sameDisk, type Level } from './harness.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
after(() => {
  builder.remove();
  twins.remove();
});

const CLUSTERS = ['512', '4k', '64k', '128k'];
const SIZE = 6 * 1024 * 1024;

function writes(next: () => number, count: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const offset = (next() % (SIZE / 512)) * 512;
    const length = Math.min(SIZE - offset, ((next() % 256) + 1) * 512);
    const kind = next() % 6;
    out.push(kind === 0 ? `write -z ${offset} ${length}` : kind === 1 ? `discard ${offset} ${length}` : `write -P ${1 + (next() % 250)} ${offset} ${length}`);
  }
  return out;
}

function chain(seed: number): Record<string, Uint8Array> {
  const next = prng(seed);
  const pick = <T>(list: readonly T[]) => list[next() % list.length];
  const levels: Level[] = [
    { name: 'b.qcow2', create: ['-f', 'qcow2', '-o', `cluster_size=${pick(CLUSTERS)},refcount_bits=${pick(['1', '16', '64'])},compat=${pick(['1.1', '0.10'])}`], size: '6M', writes: writes(next, 6) },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-o', `cluster_size=${pick(CLUSTERS)}`, '-b', 'b.qcow2', '-F', 'qcow2'], size: '6M', writes: writes(next, 8) },
  ];
  // refcount_bits other than 16 needs compat=1.1.
  if (!levels[0].create[3].includes('refcount_bits=16')) levels[0].create[3] = levels[0].create[3].replace('compat=0.10', 'compat=1.1');
  return builder.chain(levels);
}

test('commit of random chains: the base reads as qemu-img makes it and checks clean, the top is emptied as qemu empties it', () => {
  for (let seed = 1; seed <= Number(process.env.COMMIT_SEEDS ?? (LONG ? 30 : 3)); seed++) {
    const files = chain(seed * 7919);
    const version = VERSIONS[seed % 2];
    const r = twins.run(version, files, ['commit', 't.qcow2']);
    const label = `seed ${seed} (${version})`;
    assert.equal(r.instar.stderr, r.qemu.stderr, `${label}: stderr`);
    assert.equal(r.instar.status, r.qemu.status, label);
    assert.equal(r.instar.stdout, r.qemu.stdout, label);
    assert.ok(readFileSync(join(r.instarDir, 't.qcow2')).equals(readFileSync(join(r.qemuDir, 't.qcow2'))), `${label}: top differs`);
    assert.ok(sameDisk(version, join(r.instarDir, 'b.qcow2'), join(r.qemuDir, 'b.qcow2')), `${label}: base reads differently`);
    assertCheckClean(version, join(r.instarDir, 'b.qcow2'));
  }
});
