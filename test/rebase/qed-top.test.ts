// Safe rebase (no -u) of QED tops that have data to copy, differential against qemu-img 7.2 and
// 10.0: stdout (-p included), stderr, exit status and every file byte for byte (qemu's copy loop
// is sequential and qed's allocation follows its requests, so the layout is deterministic); then
// every prefix of its writes, which must leave a top qemu-img opens, checks (leaks at most) and
// reads as before.
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
const QED = ['-f', 'qed', '-b', 'old.qcow2', '-F', 'qcow2'];

before(() => {
  // Old and new differ in several clusters; the top has data of its own in one of them.
  chains.basic = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '6M', writes: ['write -P 1 0 128k', 'write -P 2 1M 4k', 'write -P 3 4M 64k'] },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '6M', writes: ['write -P 1 0 64k', 'write -P 9 3M 64k'] },
    { name: 't.qed', create: QED, size: '6M', writes: ['write -P 5 4M 64k'], format: 'qed' },
  ]);
  // The top's last cluster partly inside the disk (5 MiB + 512): qemu fills the rest of it from
  // the old backing file, which has data there.
  chains.tail = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '6M', writes: ['write -P 1 0 6M'] },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '6M', writes: ['write -P 1 0 5M'] },
    { name: 't.qed', create: QED, size: '5243392', format: 'qed' },
  ]);
  // The old backing file ends inside a cluster (7.2 ends its chunk there and writes zeros after
  // it), a longer raw new backing file.
  chains.oldEnd = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '3146240', writes: ['write -P 1 0 3146240'] },
    { name: 'new.raw', create: ['-f', 'raw'], size: '5M', writes: ['write -P 1 0 1M', 'write -P 7 4M 8k'], format: 'raw' },
    { name: 't.qed', create: QED, size: '5M', writes: ['write -P 5 2M 4k'], format: 'qed' },
  ]);
  // 4 KiB clusters and two-cluster tables (an L2 table maps 4 MiB): new L2 tables after the data
  // they map, requests of a few sectors, clusters written by two requests.
  chains.tables = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '12M', writes: ['write -P 3 1M 100k', 'write -P 4 3M 4k', 'write -P 6 4000k 200k', 'write -P 7 9M 1k', 'write -P 8 9218k 1k'] },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '12M', writes: ['write -P 3 1M 50k', 'write -P 9 8M 8k'] },
    { name: 't.qed', create: ['-o', 'cluster_size=4096,table_size=2', ...QED], size: '12M', writes: ['write -P 5 3M 4k'], format: 'qed' },
  ]);
  // No old backing file: qemu writes zeros where the new one has data (zero clusters).
  chains.noOld = builder.chain([
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '4M', writes: ['write -P 3 1M 100k', 'write -P 4 3M 4k'] },
    { name: 'n.qed', create: ['-f', 'qed'], size: '4M', writes: ['write -P 5 0 64k'], format: 'qed' },
  ]);
});
after(() => {
  builder.remove();
  twins.remove();
});

/** [chain, arguments, through the real sandbox]. */
const CASES: [string, string[], boolean?][] = [
  ['basic', ['-p', '-b', 'new.qcow2', '-F', 'qcow2', 't.qed'], true],
  // No -F: qemu copies, then its block layer refuses the new name.
  ['basic', ['-b', 'new.qcow2', 't.qed']],
  ['basic', ['-p', '-b', '', 't.qed']],
  ['tail', ['-p', '-b', 'new.qcow2', '-F', 'qcow2', 't.qed']],
  ['oldEnd', ['-p', '-b', 'new.raw', '-F', 'raw', 't.qed']],
  ['tables', ['-p', '-b', 'new.qcow2', '-F', 'qcow2', 't.qed']],
  ['tables', ['-b', '', '-f', 'qed', 't.qed']],
  ['noOld', ['-p', '-b', 'new.qcow2', '-F', 'qcow2', 'n.qed']],
];

for (const version of VERSIONS) {
  test(`safe rebase of a qed top matches qemu-img ${version} byte for byte`, () => {
    for (const [chain, args, sandboxed] of CASES) {
      const r = twins.run(version, chains[chain], ['rebase', ...args], { sandboxed: sandboxed && version === '10.0' });
      const label = `${version} ${chain}: rebase ${args.join(' ')}`;
      assertSameOutcome(r, Object.keys(chains[chain]), label);
      const top = args[args.length - 1];
      assert.ok(!readFileSync(join(r.qemuDir, top)).equals(chains[chain][top]), `${label}: qemu-img copied something`);
    }
  });
}

test('safe rebase of a qed top stopped after every write: the top opens, only leaks, reads as before', () => {
  for (const chain of ['basic', 'tables']) {
    const files = chains[chain];
    const names = { top: 't.qed', format: 'qed', newBacking: 'new.qcow2' };
    const original = join(builder.root, `${chain}-orig`);
    mkdirSync(original);
    for (const [name, bytes] of Object.entries(files)) writeFileSync(join(original, name), bytes);
    const final = join(builder.root, `${chain}-done`);
    assert.equal((safeRebaseInDir(final, files, Infinity, names) as { done?: boolean }).done, true);
    const finalTop = readFileSync(join(final, 't.qed'));
    let k = 0;
    for (; k < 40; k++) {
      const dir = join(builder.root, `${chain}-crash${k}`);
      safeRebaseInDir(dir, files, k, names);
      const top = join(dir, 't.qed');
      const check = runQemu('10.0', ['check', top]);
      assert.ok(check.status === 0 || check.status === 3, `${chain} after ${k} writes: ${check.stdout}${check.stderr}`);
      assert.equal(runQemu('10.0', ['compare', '-q', join(original, 't.qed'), top]).status, 0, `${chain} after ${k} writes the top reads differently`);
      if (readFileSync(top).equals(finalTop)) break;
    }
    assert.ok(k >= 4 && k < 40, `${chain}: ${k} writes`);
  }
});
