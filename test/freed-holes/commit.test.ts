// commit as qemu-img's mirror job does it: the top's zero runs become zero clusters of a version 3
// base (with or without a persistent bitmap), whose data clusters there are freed and discarded
// (holes); the emptied top gets its whole header cluster rewritten (allocated). Against qemu-img
// 7.2 and 10.0, on files qemu-img and qemu-io made in place (so that both sides start from qemu's
// own allocation): both files' bytes, allocated blocks and info, sandboxed and in-process.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, oracle, runInstar, runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { assertSameAllocation } from './allocation.ts';

const root = mkdtempSync(join(tmpdir(), 'instar-commit-holes-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** A base full of data (recorded by bitmap b0 if asked) and a top with zeros over part of it and data elsewhere, made in `dir`. */
function chain(dir: string, bitmap: boolean): void {
  mkdirSync(dir, { recursive: true });
  const ok = (r: { status: number | null; stderr: string }) => assert.equal(r.status, 0, r.stderr);
  ok(runQemu('10.0', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '4M'], { cwd: dir }));
  if (bitmap) ok(runQemu('10.0', ['bitmap', '--add', 'base.qcow2', 'b0'], { cwd: dir }));
  ok(runQemu('10.0', ['-c', 'write -P 5 0 4M', 'base.qcow2'], { cwd: dir }, 'qemu-io'));
  ok(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], { cwd: dir }));
  ok(runQemu('10.0', ['-c', 'write -z 0 1M', '-c', 'write -P 7 2M 64k', 'top.qcow2'], { cwd: dir }, 'qemu-io'));
}

function sides(q: string, i: string, name: string) {
  return { qemuPath: join(q, name), instarPath: join(i, name), qemuFile: readFileSync(join(q, name)), instarFile: readFileSync(join(i, name)) };
}

let n = 0;
function run(v: OracleVersion, sandboxed: boolean, bitmap: boolean): void {
  const q = join(root, String(n), 'q');
  const i = join(root, String(n++), 'i');
  chain(q, bitmap);
  chain(i, bitmap);
  const theirs = runQemu(v, ['commit', 'top.qcow2'], { cwd: q });
  theirs.stderr = theirs.stderr.split(oracle(v)).join('qemu-img');
  const ours = runInstar(['commit', 'top.qcow2'], { cwd: i, env: { INSTAR_QEMU_VERSION: v, INSTAR_SANDBOX: sandboxed ? '' : 'none' } });
  const label = `qemu-img ${v} commit${sandboxed ? '' : ' --sandbox=none'}${bitmap ? ', a base with a bitmap' : ''}`;
  assert.deepEqual([ours.stdout, ours.stderr, ours.status], [theirs.stdout, theirs.stderr, theirs.status], label);
  assertSameAllocation(v, sides(q, i, 'base.qcow2'), `${label}, base`);
  // The emptied top has no holes left on qemu's side (its first cluster written whole, the rest
  // zeroed with FALLOC_FL_ZERO_RANGE, whose unwritten extents lseek may report as holes).
  assertSameAllocation(v, sides(q, i, 'top.qcow2'), `${label}, top`, { holes: false, dataRuns: false });
}

test('commit: the base\'s clusters under the top\'s zeros become holes, the emptied top is allocated as qemu\'s', () => {
  // One version through the sandbox, the other in-process: both paths, half the runs.
  for (const v of VERSIONS) for (const bitmap of [false, true]) run(v, v === '10.0', bitmap);
});
