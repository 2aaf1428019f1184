// Clusters freed by check -r, resize --shrink and the refcount repair of a writable open (a dirty
// image) become holes, as qemu's discards make them:
// against qemu-img 7.2 and 10.0, the repaired or shrunk file has qemu's bytes, qemu's allocated
// blocks and qemu's `info` (its "disk size"), sandboxed and in-process. The input files are fully
// allocated (written whole), so every block qemu frees shows.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { RepairDirs, assertSameRun } from '../check/repair-harness.ts';
import { setRefcount16 } from '../check/qcow2-edit.ts';
import { assertSameAllocation } from './allocation.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;
const images: Record<string, Uint8Array> = {};

/** A 10 MiB qcow2 with 200 KiB of data, grown to `clusters` clusters, some filled, refcounts edited. */
function leaky(name: string, fill: number[], refcounts: [number, number][], clusters = 14, cs = CLUSTER): Uint8Array {
  const path = join(dirs.root, name);
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, path, '10M']).status, 0);
  assert.equal(runQemu('10.0', ['-c', `write -P 0x5 0 ${cs === CLUSTER ? '200k' : '20k'}`, path], {}, 'qemu-io').status, 0);
  truncateSync(path, clusters * cs);
  const fd = openSync(path, 'r+');
  for (const c of fill) writeSync(fd, Buffer.alloc(cs, 0x77), 0, cs, c * cs);
  closeSync(fd);
  for (const [cluster, value] of refcounts) setRefcount16(path, cluster, value);
  return new Uint8Array(readFileSync(path));
}

/** A qcow2 made by qemu-img create, written by qemu-io. */
function written(name: string, size: string, ...commands: string[]): Uint8Array {
  const path = join(dirs.root, name);
  const options = name.includes('512') ? ['-o', 'cluster_size=512'] : [];
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', ...options, path, size]).status, 0);
  const r = runQemu('10.0', [...commands.flatMap((c) => ['-c', c]), path], {}, 'qemu-io');
  assert.equal(r.status, 0, r.stderr);
  return new Uint8Array(readFileSync(path));
}

before(() => {
  // Leaked clusters, two of them holding data, the last ones at the file's end.
  images.leaks = leaky('leaks.qcow2', [9, 11, 13], [[9, 1], [10, 1], [11, 1], [13, 1]]);
  // A data cluster's refcount 0: -r all rebuilds the refcount structure and frees the old one.
  images.rebuild = leaky('rebuild.qcow2', [9], [[6, 0], [9, 1]]);
  // 512-byte clusters, 24 leaked ones from a 4 KiB boundary on: qemu discards them one by one,
  // which frees no 4 KiB block (the bytes become zeros).
  const run = Array.from({ length: 24 }, (_, i) => 48 + i);
  images.leaks512 = leaky('leaks512.qcow2', run, run.map((c) => [c, 1]), 72, 512);
  // Data at 0-1M, 8M-9M, then 1M-2M: shrinking to 4M frees clusters in the middle of the file.
  images.shrink = written('shrink.qcow2', '10M', 'write -P 5 0 1M', 'write -P 6 8M 1M', 'write -P 7 1M 1M');
  // 512-byte clusters: the L2 tables past the new end are freed one by one, the data in one go.
  images.shrink512 = written('shrink512.qcow2', '1M', 'write -P 5 0 100k', 'write -P 6 800k 50k', 'write -P 7 100k 50k');
  // Lazy refcounts, qemu-io killed: a writable open rebuilds the refcounts and frees the old ones.
  const dirty = join(dirs.root, 'dirty.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', dirty, '16M']).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 1 0 256k', '-c', 'write -P 2 4M 64k', '-c', 'sigraise 9', dirty], {}, 'qemu-io').signal, 'SIGKILL');
  images.dirty = new Uint8Array(readFileSync(dirty));
});
after(() => dirs.remove());

const CASES: { image: string; args: string[]; viaEnv?: boolean; holes?: false }[] = [
  { image: 'leaks', args: ['check', '-r', 'leaks', 'x.qcow2'] },
  { image: 'leaks', args: ['check', '-r', 'all', '--output=json', 'x.qcow2'] },
  { image: 'rebuild', args: ['check', '-r', 'all', 'x.qcow2'] },
  { image: 'leaks512', args: ['check', '-r', 'leaks', 'x.qcow2'], holes: false },
  { image: 'shrink', args: ['resize', '--shrink', 'x.qcow2', '4M'], viaEnv: true },
  { image: 'shrink512', args: ['resize', '--shrink', 'x.qcow2', '400k'], viaEnv: true },
  { image: 'dirty', args: ['amend', '-o', 'lazy_refcounts=off', 'x.qcow2'], viaEnv: true },
];

for (const { image, args, viaEnv, holes } of CASES) {
  test(`freed clusters become holes: ${image}, ${args.join(' ')}`, () => {
    const bytes = images[image];
    for (const v of VERSIONS) {
      // One version through the sandbox, the other in-process: both paths, half the runs.
      const sandboxed = v === '10.0';
      const r = dirs.run(v, 'x.qcow2', bytes, args, { sandboxed, viaEnv });
      const label = `${image}, qemu-img ${v} ${args.join(' ')}${sandboxed ? '' : ' --sandbox=none'}`;
      assertSameRun(r, label);
      assertSameAllocation(v, r, label, { holes });
    }
  });
}
