// Persistent bitmaps' data clusters that a command frees (bitmap --remove; the bitmaps stored anew
// at the close of check -r) are discarded by qemu. The check -r case also frees leaked clusters
// that the stored bitmap's table then partly reuses: only what stays free becomes a hole.
// Against qemu-img 7.2 and 10.0: qemu's bytes, allocated blocks and info, sandboxed and in-process.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { RepairDirs, assertSameRun } from '../check/repair-harness.ts';
import { setRefcount16 } from '../check/qcow2-edit.ts';
import { assertSameAllocation } from './allocation.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;
const images: Record<string, Uint8Array> = {};

/** A qcow2 with bitmap b0 recording qemu-io's writes (so that it has data clusters). */
function withBitmap(name: string, size: string, ...writes: string[]): string {
  const path = join(dirs.root, name);
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', path, size]).status, 0);
  assert.equal(runQemu('10.0', ['bitmap', '--add', path, 'b0']).status, 0);
  const r = runQemu('10.0', [...writes.flatMap((w) => ['-c', w]), path], {}, 'qemu-io');
  assert.equal(r.status, 0, r.stderr);
  return path;
}

before(() => {
  images.remove = new Uint8Array(readFileSync(withBitmap('r.qcow2', '1G', 'write -P 5 0 1M', 'write -P 5 500M 1M')));
  // Three leaked clusters holding data past the end.
  const leaky = withBitmap('l.qcow2', '10M', 'write -P 5 0 200k');
  const first = Math.ceil(statSync(leaky).size / CLUSTER);
  truncateSync(leaky, (first + 3) * CLUSTER);
  const fd = openSync(leaky, 'r+');
  for (let c = first; c < first + 3; c++) writeSync(fd, Buffer.alloc(CLUSTER, 0x77), 0, CLUSTER, c * CLUSTER);
  closeSync(fd);
  for (let c = first; c < first + 3; c++) setRefcount16(leaky, c, 1);
  images.leaks = new Uint8Array(readFileSync(leaky));
});
after(() => dirs.remove());

const CASES: [string, string[]][] = [
  ['remove', ['bitmap', '--remove', 'x.qcow2', 'b0']],
  ['leaks', ['check', '-r', 'leaks', 'x.qcow2']],
];

for (const [image, args] of CASES) {
  test(`freed bitmap clusters become holes: ${args.join(' ')}`, () => {
    for (const v of VERSIONS) {
      // One version through the sandbox, the other in-process: both paths, half the runs.
      const sandboxed = v === '10.0';
      const r = dirs.run(v, 'x.qcow2', images[image], args, { sandboxed, viaEnv: true });
      const label = `qemu-img ${v} ${args.join(' ')}${sandboxed ? '' : ' --sandbox=none'}`;
      assertSameRun(r, label);
      assertSameAllocation(v, r, label);
    }
  });
}
