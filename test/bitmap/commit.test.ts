// commit with persistent bitmaps, against qemu-img 7.2 and 10.0: a base with bitmaps (enabled,
// disabled, 512-byte and 1 MiB granules, in use) is reopened for writing (bitmaps marked in use),
// the enabled ones record the commit's writes, and they are stored anew; a base with a stale
// extension keeps it (the reopen does not rewrite the header); a smaller base with bitmaps is
// grown inside that reopen (its bitmaps grow too); a top with bitmaps is opened for writing and
// closed (-d), or emptied as qemu empties it then (every cluster discarded, the L2 tables kept),
// a stale top loses its extension. Output and
// both files byte for byte (each case on one oracle in the short tier, on both in the long one). Tops copy one new cluster only: with several, qemu's parallel copy
// places them in an order that differs from run to run. Every prefix of the writes of a commit
// into a base with bitmaps (-d; emptying a top with bitmaps; growing a base) leaves images qemu-img
// checks with leaks at most.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { versionMatrix } from './harness.ts';
import { RepairDirs, assertSameRun } from '../check/repair-harness.ts';
import { build10, directoryOffset, withStaleExtension } from './fixtures.ts';
import type { CommitResult } from '../../src/ops/commit.ts';
import { commitInDir } from '../commit/harness.ts';

const dirs = new RepairDirs();
const images: Record<string, Buffer> = {};

const sh = build10;
const staled = withStaleExtension;

before(() => {
  const p = (name: string) => join(dirs.root, name);
  // Bases (named b.qcow2 by the tops): 1 MiB of data, then bitmaps.
  sh(['create', '-q', '-f', 'qcow2', p('b.qcow2'), '4M']);
  sh(['-c', 'write -P 1 0 1M', p('b.qcow2')], 'qemu-io');
  images.plainBase = readFileSync(p('b.qcow2'));
  sh(['bitmap', '--add', '-g', '512', p('b.qcow2'), 'fine']);
  sh(['bitmap', '--add', '-g', '1M', p('b.qcow2'), 'coarse']);
  sh(['bitmap', '--add', p('b.qcow2'), 'off']);
  sh(['bitmap', '--disable', p('b.qcow2'), 'off']);
  images.base = readFileSync(p('b.qcow2'));
  images.staleBase = staled(images.base);
  images.inuseBase = Buffer.from(images.base);
  images.inuseBase[directoryOffset(images.inuseBase) + 15] |= 1;
  // The top: 4 KiB over base data (no allocation), 64 KiB in a new cluster.
  sh(['create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', p('t.qcow2')]);
  sh(['-c', 'write -P 2 100k 4k', '-c', 'write -P 3 2M 64k', p('t.qcow2')], 'qemu-io');
  images.top = readFileSync(p('t.qcow2'));
  sh(['bitmap', '--add', p('t.qcow2'), 'tb']);
  images.bitmapTop = readFileSync(p('t.qcow2'));
  images.staleTop = staled(images.bitmapTop);
  images.inuseTop = Buffer.from(images.bitmapTop);
  images.inuseTop[directoryOffset(images.inuseTop) + 15] |= 1;
  // A top with bitmaps, a compressed cluster (the one new base cluster), a zero cluster over base
  // data and an allocated zero cluster: emptying frees each kind as qemu's discard does.
  sh(['create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', p('r.qcow2')]);
  sh(['-c', 'write -P 2 100k 4k', '-c', 'write -z 512k 64k', p('r.qcow2')], 'qemu-io');
  sh(['bitmap', '--add', p('r.qcow2'), 'rb']);
  sh(['bitmap', '--add', '-g', '512', p('r.qcow2'), 'rf']);
  sh(['-c', 'write -c -P 3 2M 64k', '-c', 'write -P 4 192k 64k', '-c', 'write -z 192k 64k', p('r.qcow2')], 'qemu-io');
  images.richTop = readFileSync(p('r.qcow2'));
  // A 1 MiB base with bitmaps under tops of 4 MiB and 1 GiB (its L1 table grows): one new cluster each.
  sh(['create', '-q', '-f', 'qcow2', p('s.qcow2'), '1M']);
  sh(['-c', 'write -P 5 0 512k', p('s.qcow2')], 'qemu-io');
  sh(['bitmap', '--add', p('s.qcow2'), 'sb']);
  sh(['bitmap', '--add', '-g', '512', p('s.qcow2'), 'sf']);
  sh(['-c', 'write -P 6 900k 4k', p('s.qcow2')], 'qemu-io');
  images.smallBase = readFileSync(p('s.qcow2'));
  for (const [name, size, far] of [['growTop', '4M', '3M'], ['bigTop', '1G', '900M']]) {
    sh(['create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', p(`${name}.qcow2`), size]);
    sh(['-c', 'write -P 2 100k 4k', '-c', `write -P 3 ${far} 64k`, p(`${name}.qcow2`)], 'qemu-io');
    sh(['bitmap', '--add', p(`${name}.qcow2`), 'tb']);
    images[name] = readFileSync(p(`${name}.qcow2`));
  }
});
after(() => dirs.remove());

function same(version: OracleVersion, base: string, top: string, args: string[]): void {
  const r = dirs.run(version, 't.qcow2', images[top], ['commit', ...args, 't.qcow2'], { viaEnv: true, files: { 'b.qcow2': images[base] } });
  const label = `qemu-img ${version} commit ${args.join(' ')} of ${top} into ${base}`;
  assertSameRun(r, label);
  assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the tops differ`);
  const [qemuBase, instarBase] = [r.qemuPath, r.instarPath].map((path) => readFileSync(join(dirname(path), 'b.qcow2')));
  assert.ok(instarBase.equals(qemuBase), `${label}: the bases differ`);
}

test('commit into a base with bitmaps, and of a top with bitmaps or a stale extension, as qemu writes them', () => {
  const cases: [string, string, string[]][] = [
    ['base', 'top', []],
    ['base', 'top', ['-d']],
    ['inuseBase', 'top', []],
    ['staleBase', 'top', []],
    ['plainBase', 'bitmapTop', ['-d']],
    ['base', 'bitmapTop', ['-d']],
    ['base', 'staleTop', []],
    ['staleBase', 'staleTop', ['-d']],
  ];
  for (const [v, [base, top, args]] of versionMatrix(cases)) same(v, base, top, args);
});

test('commit emptying a top with bitmaps, and growing a base with bitmaps, as qemu writes them', () => {
  const cases: [string, string, string[]][] = [
    ['base', 'bitmapTop', []],
    ['plainBase', 'bitmapTop', []],
    ['base', 'inuseTop', []],
    ['base', 'richTop', []],
    ['plainBase', 'richTop', ['-d']],
    ['smallBase', 'growTop', []],
    ['smallBase', 'growTop', ['-d']],
    ['smallBase', 'bigTop', []],
  ];
  // Emptying and growing on both oracles in every tier.
  for (const v of ['7.2', '10.0'] as const) for (const [base, top, args] of cases) same(v, base, top, args);
  // info and check of what instar left, against qemu-img's reading of qemu's files.
  for (const [base, top] of [['base', 'richTop'], ['smallBase', 'bigTop']]) {
    const r = dirs.run('10.0', 't.qcow2', images[top], ['commit', 't.qcow2'], { viaEnv: true, files: { 'b.qcow2': images[base] } });
    const bases = [r.qemuPath, r.instarPath].map((path) => readFileSync(join(dirname(path), 'b.qcow2')));
    for (const args of [['info', '--output=json', 'IMG'], ['check', 'IMG'], ['info', '-U', '--backing-chain', 'IMG']]) {
      for (const [name, bytes] of [['t.qcow2', r.instarFile], ['b.qcow2', bases[1]]] as const) {
        const c = dirs.run('7.2', name, bytes, args.map((a) => (a === 'IMG' ? name : a)), { viaEnv: true, files: name === 't.qcow2' ? { 'b.qcow2': bases[1] } : {} });
        assertSameRun(c, `${args.join(' ')} ${name} after commit of ${top} into ${base}`);
      }
    }
  }
});

test('emptying a top with bitmaps whose data cluster is also its L1 table is refused, nothing written (qemu marks it corrupt)', () => {
  const top = Buffer.from(images.bitmapTop);
  const l1 = Number(top.readBigUInt64BE(40));
  const l2 = Number(top.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  // The guest's first cluster now names the L1 table's cluster.
  top.writeBigUInt64BE((1n << 63n) | BigInt(l1), l2);
  const r = dirs.run('10.0', 't.qcow2', top, ['commit', 't.qcow2'], { viaEnv: true, files: { 'b.qcow2': images.base } });
  assert.match(r.qemu.stderr, /Marking image as corrupt/);
  assert.equal(r.instar.status, 1);
  assert.equal(r.instar.stderr, 'qemu-img: instar refuses this qcow2 image: a data cluster is also its metadata; nothing was written\n');
  assert.ok(r.instarFile.equals(top), 'the top is as it was');
  assert.ok(readFileSync(join(dirname(r.instarPath), 'b.qcow2')).equals(images.base), 'the base is as it was');
});

/** The chain in `dir`, committed in-process and stopped after `writes` writes. */
function commitInto(dir: string, top: string, base: string, drop: boolean, writes: number): CommitResult {
  return commitInDir(dir, { 't.qcow2': images[top], 'b.qcow2': images[base] }, { drop, stopAfterWrites: writes });
}

for (const [top, base, drop] of [['bitmapTop', 'base', true], ['richTop', 'base', false], ['growTop', 'smallBase', false]] as const) test(`every prefix of the writes of commit${drop ? ' -d' : ''} of ${top} into ${base} leaves images qemu-img checks with leaks at most`, () => {
  const done = join(dirs.root, `done-${top}-${base}`);
  assert.ok('committed' in commitInto(done, top, base, drop, Infinity));
  let k = 0;
  for (; k < 1000; k++) {
    const dir = join(dirs.root, `cut-${top}-${base}-${k}`);
    commitInto(dir, top, base, drop, k);
    for (const name of ['b.qcow2', 't.qcow2']) {
      // A base whose zero runs free clusters is written under the dirty bit (inplace-write.ts):
      // qemu's writable open repairs what a crash there leaves.
      if (readFileSync(join(dir, name))[79] & 1) {
        const repaired = runQemu('10.0', ['check', '-r', 'all', '-f', 'qcow2', join(dir, name)]);
        assert.equal(repaired.status, 0, `${name} after ${k} writes: dirty, and check -r all exits ${repaired.status}: ${repaired.stdout}${repaired.stderr}`);
        continue;
      }
      const r = runQemu('10.0', ['check', '-f', 'qcow2', join(dir, name)]);
      // Between the open's two header writes the extension reads as stale, as a crash of qemu's own open leaves it.
      const errors = (r.stdout + r.stderr).split('\n').filter((l) => /^(ERROR|Warning|qemu-img:)/.test(l) && !/^qemu-img: warning: a program lacking bitmap support/.test(l));
      assert.deepEqual(errors, [], `${name} after ${k} writes`);
      assert.ok(r.status === 0 || r.status === 3, `${name} after ${k} writes: check exits ${r.status}`);
    }
    if (readFileSync(join(dir, 'b.qcow2')).equals(readFileSync(join(done, 'b.qcow2'))) && readFileSync(join(dir, 't.qcow2')).equals(readFileSync(join(done, 't.qcow2')))) break;
  }
  assert.ok(k >= 10, `only ${k} writes`);
});
