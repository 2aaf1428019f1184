// snapshot -d, -a and -c free clusters (a deleted snapshot's data and tables, the active L1's
// clusters an apply replaces, the old snapshot table a create replaces), which qemu discards:
// against qemu-img 7.2 and 10.0, instar's file has qemu's bytes (-c: its timestamps differ), qemu's
// allocated blocks and qemu's `info`, sandboxed and in-process.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { RepairDirs, assertSameRun } from '../check/repair-harness.ts';
import { assertSameAllocation, blocks } from './allocation.ts';

const dirs = new RepairDirs();
let image: Uint8Array;

before(() => {
  // Data under snapshot s1, then half of it overwritten and more written after it.
  const path = join(dirs.root, 'sn.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', path, '10M']).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 5 0 1M', path], {}, 'qemu-io').status, 0);
  assert.equal(runQemu('10.0', ['snapshot', '-c', 's1', path]).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 6 0 512k', '-c', 'write -P 7 4M 1M', path], {}, 'qemu-io').status, 0);
  image = new Uint8Array(readFileSync(path));
});
after(() => dirs.remove());

for (const args of [['snapshot', '-d', 's1', 'x.qcow2'], ['snapshot', '-a', 's1', 'x.qcow2']]) {
  test(`freed clusters become holes: ${args.join(' ')}`, () => {
    for (const v of VERSIONS) {
      // One version through the sandbox, the other in-process: both paths, half the runs.
      const sandboxed = v === '10.0';
      const r = dirs.run(v, 'x.qcow2', image, args, { sandboxed });
      const label = `qemu-img ${v} ${args.join(' ')}${sandboxed ? '' : ' --sandbox=none'}`;
      assertSameRun(r, label);
      assertSameAllocation(v, r, label);
    }
  });
}

test('freed clusters become holes: snapshot -c (the old snapshot table)', () => {
  for (const v of VERSIONS) {
    const r = dirs.run(v, 'x.qcow2', image, ['snapshot', '-c', 's2', 'x.qcow2']);
    assertSameRun(r, `qemu-img ${v} snapshot -c`);
    assert.equal(r.instarFile.length, r.qemuFile.length);
    assert.equal(blocks(r.instarPath), blocks(r.qemuPath), `qemu-img ${v} snapshot -c: allocated blocks`);
    assert.equal(runQemu(v, ['check', r.instarPath]).status, 0);
  }
});
