// Mutating commands (resize, amend, bitmap, rebase, snapshot, bench -w) on a dirty qcow2 (lazy refcounts, qemu-io killed after its writes): qemu's
// writable open repairs the refcounts first, printing the check's lines, marks the image clean,
// then the command runs. instar the same, against qemu-img 7.2 and 10.0: output, exit status and
// the resulting file (snapshot -c: its timestamps differ, so the file is checked and compared).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { RepairDirs, assertSameRun } from './repair-harness.ts';

const dirs = new RepairDirs();
let dirty: Buffer;

before(() => {
  const path = join(dirs.root, 'lazy.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path, '16M']).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 1 0 256k', '-c', 'write -P 2 4M 64k', '-c', 'sigraise 9', path], {}, 'qemu-io').signal, 'SIGKILL');
  dirty = readFileSync(path);
  assert.equal(dirty.readBigUInt64BE(72) & 1n, 1n, 'the image is dirty');
});
after(() => dirs.remove());

const BYTE_IDENTICAL = [
  ['resize', 'x.qcow2', '+1M'],
  ['resize', '--shrink', 'x.qcow2', '8M'],
  ['amend', '-o', 'lazy_refcounts=off', 'x.qcow2'],
  ['bitmap', '--add', 'x.qcow2', 'b1'],
  ['rebase', '-u', '-b', '', 'x.qcow2'],
  ['rebase', '-b', '', 'x.qcow2'],
];

test('resize, amend, bitmap and rebase on a dirty qcow2: the open-time repair, then the command, as qemu does', () => {
  for (const v of VERSIONS) {
    for (const [i, args] of BYTE_IDENTICAL.entries()) {
      const r = dirs.run(v, 'x.qcow2', dirty, args, { sandboxed: i === 0, viaEnv: true });
      const label = `qemu-img ${v} ${args.join(' ')}`;
      assertSameRun(r, label);
      assert.match(r.qemu.stderr, /^Rebuilding refcount structure$/m, `${label}: qemu repairs at open`);
      assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
      assert.equal(r.instarFile.readBigUInt64BE(72) & 1n, 0n, `${label}: marked clean`);
    }
  }
});

test('snapshot -c on a dirty qcow2: the same output, a clean image holding the snapshot', () => {
  for (const v of VERSIONS) {
    const r = dirs.run(v, 'x.qcow2', dirty, ['snapshot', '-c', 's1', 'x.qcow2']);
    assertSameRun(r, `qemu-img ${v} snapshot -c`);
    assert.equal(runQemu(v, ['check', r.instarPath]).status, 0);
    assert.match(runQemu(v, ['snapshot', '-l', r.instarPath]).stdout, /\bs1\b/);
    assert.equal(runQemu(v, ['compare', r.qemuPath, r.instarPath]).stdout, 'Images are identical.\n');
    assert.equal(r.instarFile.length, r.qemuFile.length, 'the same layout');
  }
});

test('bench -w on a dirty qcow2: repaired at open, then the writes, as qemu does', () => {
  const timeless = (out: string) => out.replace(/^Run completed in [0-9.]+ seconds\.$/m, 'Run completed.');
  for (const v of VERSIONS) {
    const r = dirs.run(v, 'x.qcow2', dirty, ['bench', '-w', '-c', '4', '-s', '4k', '-o', '64k', 'x.qcow2'], { viaEnv: true });
    const label = `qemu-img ${v} bench -w`;
    assert.equal(r.qemu.status, 0, `${label}: ${r.qemu.stderr}`);
    assert.equal(timeless(r.instar.stdout), timeless(r.qemu.stdout), `${label}: stdout`);
    assert.equal(r.instar.stderr, r.qemu.stderr, `${label}: stderr`);
    assert.equal(r.instar.status, 0, `${label}: exit status`);
    assert.match(r.qemu.stdout + r.qemu.stderr, /Rebuilding refcount structure/, `${label}: qemu repairs at open`);
    assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
  }
});
