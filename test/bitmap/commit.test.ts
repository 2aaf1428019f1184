// commit with persistent bitmaps, against qemu-img 7.2 and 10.0: a base with bitmaps (enabled,
// disabled, 512-byte and 1 MiB granules, in use) is reopened for writing (bitmaps marked in use),
// the enabled ones record the commit's writes, and they are stored anew; a base with a stale
// extension keeps it (the reopen does not rewrite the header); a top with bitmaps is opened for
// writing and closed (-d; emptying it is refused), a stale top loses its extension. Output and
// both files byte for byte (each case on one oracle in the short tier, on both in the long one). Tops copy one new cluster only: with several, qemu's parallel copy
// places them in an order that differs from run to run. Every prefix of the writes of a commit
// into a base with bitmaps leaves images qemu-img checks with leaks at most.
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

test('commit refuses to empty a top with bitmaps, writing nothing (qemu discards every cluster there)', () => {
  const r = dirs.run('10.0', 't.qcow2', images.bitmapTop, ['commit', 't.qcow2'], { viaEnv: true, files: { 'b.qcow2': images.base } });
  assert.equal(r.qemu.status, 0);
  assert.equal(r.instar.status, 1);
  assert.match(r.instar.stderr, /instar cannot empty this qcow2 image \(it has persistent bitmaps\); nothing was written/);
  assert.ok(r.instarFile.equals(images.bitmapTop));
  assert.ok(readFileSync(join(dirname(r.instarPath), 'b.qcow2')).equals(images.base));
});

/** The chain in `dir`, committed in-process (-d) and stopped after `writes` writes. */
function commitInto(dir: string, writes: number): CommitResult {
  return commitInDir(dir, { 't.qcow2': images.bitmapTop, 'b.qcow2': images.base }, { drop: true, stopAfterWrites: writes });
}

test('every prefix of the writes of commit -d with bitmaps in base and top leaves images qemu-img checks with leaks at most', () => {
  const done = join(dirs.root, 'done');
  assert.ok('committed' in commitInto(done, Infinity));
  let k = 0;
  for (; k < 1000; k++) {
    const dir = join(dirs.root, `cut${k}`);
    commitInto(dir, k);
    for (const name of ['b.qcow2', 't.qcow2']) {
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
