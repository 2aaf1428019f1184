// convert -n into an existing qcow2: where the source reads as zeros, qemu writes zero clusters
// with unmap, frees the data clusters there and discards them (holes in the target file). instar
// the same, against qemu-img 7.2 and 10.0: the target's bytes, allocated blocks and `info`,
// sandboxed and in-process.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { RepairDirs, assertSameRun } from '../check/repair-harness.ts';
import { assertSameAllocation } from './allocation.ts';

const dirs = new RepairDirs();
const MiB = 1024 * 1024;
let target: Uint8Array;
let source: Buffer;

before(() => {
  const path = join(dirs.root, 't.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', path, '4M']).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 5 0 4M', path], {}, 'qemu-io').status, 0);
  target = new Uint8Array(readFileSync(path));
  // Data in the first cluster and in the third MiB; zeros elsewhere (whose clusters qemu frees).
  source = Buffer.alloc(4 * MiB);
  source.fill(0x61, 0, 3);
  source.fill(0x62, 2 * MiB, 2 * MiB + 100_000);
});
after(() => dirs.remove());

test('convert -n into a qcow2: clusters freed where the source is zero become holes', () => {
  const args = ['convert', '-n', '-f', 'raw', '-O', 'qcow2', 'z.raw', 'x.qcow2'];
  for (const v of VERSIONS) {
    // One version through the sandbox, the other in-process: both paths, half the runs.
    const sandboxed = v === '10.0';
    const r = dirs.run(v, 'x.qcow2', target, args, { sandboxed, viaEnv: true, files: { 'z.raw': source } });
    const label = `qemu-img ${v} ${args.join(' ')}${sandboxed ? '' : ' --sandbox=none'}`;
    assertSameRun(r, label);
    assertSameAllocation(v, r, label);
  }
});
