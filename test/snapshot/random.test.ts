// Random sequences of snapshot creates, applies and deletes with guest writes between them
// (plain, compressed, zeroed, discarded), on random cluster sizes and refcount widths, each run
// by qemu-img and by instar on its own copy: messages, exit statuses and files must match after
// every step (snapshot dates masked). Seeds are fixed, so a failure reproduces.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { prng } from '../helpers/xorshift.ts';
import { runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { PairDirs, assertSameOutput, maskSnapshotDates } from './harness.ts';

const dirs = new PairDirs();
after(() => dirs.remove());

const SEEDS = [9, 44, 124, 132, 2024, 77];

async function randomSequence(seed: number): Promise<void> {
  const next = prng(seed);
  const pick = <T>(list: readonly T[]): T => list[next() % list.length];
  const version: OracleVersion = pick(['7.2', '10.0'] as const);
  const clusterSize = pick([512, 1024, 4096, 65536]);
  const refcountBits = pick([1, 2, 4, 16, 16, 64]);
  const size = pick([1, 2, 4]) * 1024 * 1024;
  const what = `seed ${seed} (${version}, ${clusterSize}-byte clusters, ${refcountBits}-bit refcounts)`;
  const scratch = mkdtempSync(join(dirs.root, 'build-'));
  const file = join(scratch, 'img.qcow2');
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${clusterSize},refcount_bits=${refcountBits}`, file, String(size)]).status, 0);
  const guestWrites = (): string[] => {
    const commands: string[] = [];
    for (let n = 1 + (next() % 3); n > 0; n--) {
      const kind = pick(['write', 'write', 'write -c', 'write -z', 'discard']);
      const length = kind === 'write -c' ? clusterSize : pick([512, 4096, 65536]);
      const offset = Math.floor((next() % (size - length)) / (kind === 'write -c' ? clusterSize : 512)) * (kind === 'write -c' ? clusterSize : 512);
      commands.push(kind === 'write' ? `write -P ${1 + (next() % 255)} ${offset} ${length}` : `${kind} ${offset} ${length}`);
    }
    return commands;
  };
  assert.equal(runQemu('7.2', ['-f', 'qcow2', ...guestWrites().flatMap((c) => ['-c', c]), file], {}, 'qemu-io').status, 0);
  const s = dirs.session(version, { 'img.qcow2': readFileSync(file) }, 'img.qcow2');
  const names: string[] = [];
  for (let step = 0; step < 7; step++) {
    const action = pick(['-c', '-c', '-a', '-d', 'io']);
    if (action === 'io') {
      s.io(guestWrites());
      continue;
    }
    const name = action === '-c' ? pick(['a', 'b', 'c']) : pick([...names, '1', '2', 'zz']);
    if (action === '-c') names.push(name);
    const r = await s(['snapshot', action, name, 'img.qcow2']);
    assertSameOutput(r, `${what} step ${step}: ${action} ${name}`);
    assert.ok(maskSnapshotDates(r.instarFile).equals(maskSnapshotDates(r.qemuFile)), `${what} step ${step}: ${action} ${name}: the files differ`);
  }
}

for (const seed of SEEDS) test(`random snapshot sequence, seed ${seed}`, () => randomSequence(seed));
