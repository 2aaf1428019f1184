// Safe rebase into a qcow2 top with extended L2 entries (extended_l2=on), differential against
// qemu-img 7.2 and 10.0: qemu's driver writes subclusters, so a copy allocates (or fills in place)
// only the subclusters that differ, sets their bits, and the file ends where the last one does;
// a zero write past the old backing file sets zero bits. The hunt found instar refusing these
// tops. Then crash safety of every write prefix.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { TwinDirs, assertSameOutcome, safeRebaseInDir } from './harness.ts';
import { ImageBuilder } from '../commit/harness.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
const chains: Record<string, Record<string, Uint8Array>> = {};

before(() => {
  // An old backing file shorter than the top, differing from the new one sector by sector; a top
  // whose size is no whole subcluster, with zero subclusters and a cluster allocated in part.
  chains.mixed = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '1536k', writes: ['write -P 1 0 1536k', 'write -P 0 5k 512'] },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '3M', writes: ['write -P 1 4k 4k', 'write -P 9 2M 3k', 'write -P 9 2100k 300k', 'write -P 7 3071k 1k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'old.qcow2', '-F', 'qcow2'], size: '3073536', writes: ['write -P 3 0 2k', 'write -P 4 1M 1k', 'write -z 70k 6k'] },
  ]);
  // A raw old backing file ending inside a subcluster (7.2's chunk ends there, the write widens
  // past it: qemu's next chunk finds that subcluster allocated); 16 KiB clusters (512-byte
  // subclusters) beside the default; a top with a persistent bitmap.
  chains.raw = builder.chain([
    { name: 'old.raw', create: ['-f', 'raw'], size: '1049088', writes: ['write -P 1 0 1049088'], format: 'raw' },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '3M', writes: ['write -P 1 0 4k', 'write -P 9 1049600 3k', 'write -P 9 1100k 200k', 'write -P 7 2047k 1k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'old.raw', '-F', 'raw'], size: '3M', writes: ['write -P 3 0 2k', 'write -z 1150k 6k', 'write -P 5 1M 512'] },
    { name: 's.qcow2', create: ['-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=16k', '-b', 'old.raw', '-F', 'raw'], size: '3M', writes: ['write -P 3 0 2k', 'write -z 1150k 6k', 'write -P 5 1M 512'] },
  ]);
  const dir = join(builder.root, 'bitmap');
  mkdirSync(dir);
  writeFileSync(join(dir, 't.qcow2'), chains.raw['t.qcow2']);
  writeFileSync(join(dir, 'old.raw'), chains.raw['old.raw']);
  assert.equal(runQemu('7.2', ['bitmap', '--add', 't.qcow2', 'b0'], { cwd: dir }).status, 0);
  chains.raw['b.qcow2'] = readFileSync(join(dir, 't.qcow2'));
});
after(() => {
  builder.remove();
  twins.remove();
});

const CASES: [string, string[]][] = [
  ['mixed', ['-p', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2']],
  ['mixed', ['-b', '', 't.qcow2']],
  ['raw', ['-p', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2']],
  ['raw', ['-p', '-b', 'new.qcow2', '-F', 'qcow2', 's.qcow2']],
  ['raw', ['-b', 'new.qcow2', '-F', 'qcow2', 'b.qcow2']],
];

for (const version of VERSIONS) {
  test(`safe rebase into an extended L2 top matches qemu-img ${version} byte for byte`, () => {
    for (const [chain, args] of CASES) {
      const r = twins.run(version, chains[chain], ['rebase', ...args]);
      assertSameOutcome(r, Object.keys(chains[chain]), `${version} ${chain}: rebase ${args.join(' ')}`);
    }
  });
}

test('safe rebase into an extended L2 top stopped after every write: the top only leaks and reads as before', () => {
  const files = chains.mixed;
  const original = join(builder.root, 'crash-orig');
  mkdirSync(original);
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(original, name), bytes);
  const done = join(builder.root, 'crash-done');
  assert.deepEqual(safeRebaseInDir(done, files, Infinity), { format: 'qcow2', progress: [[100, 7]], done: true });
  const final = readFileSync(join(done, 't.qcow2'));
  let k = 0;
  for (; k < 40; k++) {
    const dir = join(builder.root, `crash${k}`);
    safeRebaseInDir(dir, files, k);
    const top = join(dir, 't.qcow2');
    const check = runQemu('10.0', ['check', top]);
    assert.ok(check.status === 0 || check.status === 3, `after ${k} writes: ${check.stdout}${check.stderr}`);
    assert.equal(runQemu('10.0', ['compare', '-q', join(original, 't.qcow2'), top]).status, 0, `after ${k} writes the top reads differently`);
    if (readFileSync(top).equals(final)) break;
  }
  assert.ok(k >= 5 && k < 40, `${k} writes`);
});
