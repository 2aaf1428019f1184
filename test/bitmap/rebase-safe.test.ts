// Safe rebase (no -u) of a qcow2 top with persistent bitmaps (enabled, disabled, in use) or a stale
// bitmaps extension, where data is copied into the top: qemu-img's writable open marks the bitmaps
// in use, the enabled ones record each write request of the copy loop (7.2 writes runs of
// differing 512-byte sectors, 8.2+ whole clusters: a 512-byte granularity bitmap tells them
// apart), the header names the new backing file, and the close stores the bitmaps anew. instar
// against 7.2 and 10.0: stdout, stderr, exit status and every file byte for byte, `info` and
// `check` of the result; every prefix of the writes leaves a top that checks with leaks at most
// and reads as before.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';
import { versionMatrix } from './harness.ts';
import { build10, directoryOffset, withStaleExtension } from './fixtures.ts';
import { TwinDirs, assertSameOutcome, safeRebaseInDir } from '../rebase/harness.ts';

const twins = new TwinDirs();
const chains: Record<string, Record<string, Buffer>> = {};

before(() => {
  const dir = join(twins.root, 'build');
  mkdirSync(dir);
  const p = (name: string) => join(dir, name);
  const io = (file: string, ...cmds: string[]) => build10([...cmds.flatMap((c) => ['-c', c]), p(file)], 'qemu-io');
  // old and new agree on the first 512 KiB but for one sector at 4 KiB; old has more data.
  build10(['create', '-q', '-f', 'qcow2', p('old.qcow2'), '4M']);
  io('old.qcow2', 'write -P 5 0 1M', 'write -P 6 3M 64k');
  build10(['create', '-q', '-f', 'qcow2', p('new.qcow2'), '4M']);
  io('new.qcow2', 'write -P 5 0 512k', 'write -P 7 4k 512');
  // The top: b0 enabled (64 KiB granules), b1 enabled (512 bytes), b2 disabled; data of its own.
  build10(['create', '-q', '-f', 'qcow2', '-b', 'old.qcow2', '-F', 'qcow2', p('top.qcow2')]);
  io('top.qcow2', 'write -P 9 64k 64k');
  build10(['bitmap', '--add', p('top.qcow2'), 'b0']);
  build10(['bitmap', '--add', '-g', '512', p('top.qcow2'), 'b1']);
  build10(['bitmap', '--add', p('top.qcow2'), 'b2']);
  build10(['bitmap', '--disable', p('top.qcow2'), 'b2']);
  io('top.qcow2', 'write -P 8 2M 4k');
  // 512-byte clusters: the copy allocates L2 tables and refcount blocks between bitmap clusters.
  build10(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', '-b', 'old.qcow2', '-F', 'qcow2', p('small.qcow2')]);
  build10(['bitmap', '--add', '-g', '512', p('small.qcow2'), 'fine']);
  io('small.qcow2', 'write -P 3 700k 4k');
  const files = (top: Buffer) => ({ 't.qcow2': top, 'old.qcow2': readFileSync(p('old.qcow2')), 'new.qcow2': readFileSync(p('new.qcow2')) });
  const top = readFileSync(p('top.qcow2'));
  const inuse = Buffer.from(top);
  inuse[directoryOffset(inuse) + 15] |= 1;
  chains.two = files(top);
  chains.inuse = files(inuse);
  chains.stale = files(withStaleExtension(top));
  chains.small = files(readFileSync(p('small.qcow2')));
});
after(() => twins.remove());

const FILES = ['t.qcow2', 'old.qcow2', 'new.qcow2'];

test('safe rebase copying into a top with bitmaps: the copy recorded, the bitmaps stored anew, as qemu writes them', () => {
  const cases: [string, string[]][] = [
    ['two', ['-b', 'new.qcow2', '-F', 'qcow2']],
    ['two', ['-b', '']],
    ['two', ['-p', '-b', 'new.qcow2', '-F', 'qcow2']],
    ['inuse', ['-b', 'new.qcow2', '-F', 'qcow2']],
    ['stale', ['-b', '']],
    ['small', ['-b', 'new.qcow2', '-F', 'qcow2']],
    ['small', ['-b', '']],
  ];
  for (const [v, [chain, args]] of versionMatrix(cases)) {
    const r = twins.run(v, chains[chain], ['rebase', ...args, 't.qcow2']);
    assertSameOutcome(r, FILES, `${v} ${chain}: rebase ${args.join(' ')}`);
  }
  // The sector a 7.2 request covers and the cluster a 10.0 one covers: on both, in every tier.
  for (const v of VERSIONS) assertSameOutcome(twins.run(v, chains.two, ['rebase', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2']), FILES, `${v} two: the 512-byte bitmap`);
  // Through the sandboxed guest once.
  assertSameOutcome(twins.run('10.0', chains.two, ['rebase', '-b', '', 't.qcow2'], { sandboxed: true }), FILES, 'sandboxed');
});

test('after safe rebase with bitmaps: info and check of the top read as qemu-img reads them', () => {
  for (const v of VERSIONS) {
    const r = twins.run(v, chains.two, ['rebase', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2']);
    assertSameOutcome(r, FILES, `${v}: rebase`);
    const top = readFileSync(join(r.instarDir, 't.qcow2'));
    for (const args of [['info', 't.qcow2'], ['info', '--output=json', 't.qcow2'], ['check', 't.qcow2'], ['check', '--output=json', 't.qcow2']]) {
      assertSameOutcome(twins.run(v, { ...chains.two, 't.qcow2': top }, args), FILES, `${v}: ${args.join(' ')}`);
    }
  }
});

test('safe rebase with bitmaps stopped after every write: the top only leaks and reads as before', () => {
  for (const name of ['two', 'small']) {
    const chain = chains[name];
    const original = join(twins.root, `${name}-orig`);
    mkdirSync(original);
    for (const [file, bytes] of Object.entries(chain)) writeFileSync(join(original, file), bytes);
    const done = join(twins.root, `${name}-done`);
    safeRebaseInDir(done, chain, Infinity);
    const final = readFileSync(join(done, 't.qcow2'));
    let k = 0;
    for (; k < 200; k++) {
      const dir = join(twins.root, `${name}-crash${k}`);
      safeRebaseInDir(dir, chain, k);
      const top = join(dir, 't.qcow2');
      const check = runQemu('10.0', ['check', top]);
      assert.ok(check.status === 0 || check.status === 3, `${name} after ${k} writes: ${check.stdout}${check.stderr}`);
      assert.equal(runQemu('10.0', ['compare', '-q', join(original, 't.qcow2'), top]).status, 0, `${name} after ${k} writes the top reads differently`);
      if (readFileSync(top).equals(final)) break;
    }
    assert.ok(k >= 5 && k < 200, `${name}: ${k} writes`);
  }
});
