// Crash safety of commit: the op runs in-process with stopAfterWrites at every prefix of its
// writes (base data, refcounts, L2 and L1 tables, then the top's emptying), as if the process had
// died there. After each prefix qemu-img must open both images; the base may only leak clusters;
// until the top's emptying starts, the top still reads exactly as before the commit (its data
// is all still there), and the base reads as before or as after for every cluster.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu } from '../helpers/oracles.ts';
import type { CommitResult } from '../../src/ops/commit.ts';
import { ImageBuilder, commitInDir, sameDisk } from './harness.ts';

const builder = new ImageBuilder();
let files: Record<string, Uint8Array> = {};

before(() => {
  // 4 KiB base clusters with a refcount block that fills up: the commit allocates a new one.
  files = builder.chain([
    { name: 'b.qcow2', create: ['-f', 'qcow2', '-o', 'cluster_size=4096,refcount_bits=64'], size: '8M', writes: ['write -P 1 0 8k', 'write -P 2 1M 4k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2'], size: '8M', writes: ['write -P 3 0 64k', 'write -P 4 1M 64k', 'write -P 5 6M 448k', 'write -z 2M 64k'] },
  ]);
});
after(() => builder.remove());

/** Writes the chain into `dir` and commits it there in-process, stopping after `writes` writes. */
function commitInto(dir: string, writes: number): CommitResult {
  return commitInDir(dir, files, { stopAfterWrites: writes });
}

/** qemu-img check's exit status, with the output for messages. */
function check(file: string): { status: number | null; text: string } {
  const r = runQemu('10.0', ['check', '-f', 'qcow2', file], { timeoutMs: 20_000 });
  return { status: r.status, text: r.stdout + r.stderr };
}

test('commit stopped after every write leaves images qemu-img opens, the base with leaks at most', () => {
  const original = join(builder.root, 'orig');
  mkdirSync(original);
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(original, name), bytes);
  const done = join(builder.root, 'done');
  assert.ok('committed' in commitInto(done, Infinity));
  assert.equal(check(join(done, 'b.qcow2')).status, 0, check(join(done, 'b.qcow2')).text);
  assert.equal(check(join(done, 't.qcow2')).status, 0);
  // The whole commit, for the count of writes: the top's emptying is its last 8 writes.
  const total = countWrites(done);
  let k = 0;
  for (; k < total; k++) {
    const dir = join(builder.root, `crash${k}`);
    commitInto(dir, k);
    const base = check(join(dir, 'b.qcow2'));
    assert.ok(base.status === 0 || base.status === 3, `after ${k} writes the base has more than leaks: ${base.text}`);
    const top = check(join(dir, 't.qcow2'));
    assert.notEqual(top.status, 1, `after ${k} writes qemu-img cannot check the top: ${top.text}`);
    if (k <= total - TOP_WRITES) {
      assert.ok(sameDisk('10.0', join(original, 't.qcow2'), join(dir, 't.qcow2')), `after ${k} writes the top reads differently`);
      // Every base cluster is old or new: the base reads as the original top chain where the top wrote.
      const mixed = runQemu('10.0', ['compare', '-f', 'qcow2', '-F', 'qcow2', join(done, 'b.qcow2'), join(dir, 'b.qcow2')]);
      assert.ok([0, 1].includes(mixed.status ?? -1), `after ${k} writes: ${mixed.stderr}`);
    }
  }
  assert.ok(k > TOP_WRITES + 4, `only ${k} writes`);
});

/** make_completely_empty's writes: dirty bit, L1 zeros, table zeros, header, reftable entry, refblock, clean bit, truncate. */
const TOP_WRITES = 8;

/** How many writes the complete commit makes: the first prefix that changes nothing more. */
function countWrites(done: string): number {
  const final = { b: readFileSync(join(done, 'b.qcow2')), t: readFileSync(join(done, 't.qcow2')) };
  for (let k = 1; k < 200; k++) {
    const dir = join(builder.root, `count${k}`);
    commitInto(dir, k);
    if (readFileSync(join(dir, 'b.qcow2')).equals(final.b) && readFileSync(join(dir, 't.qcow2')).equals(final.t)) return k;
  }
  throw new Error('the commit never finished');
}
