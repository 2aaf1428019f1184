// check -r on qcow2 images with preallocated zero clusters whose offset is not cluster aligned,
// against qemu-img 7.2 and 10.0: -r all rewrites each such L2 entry as a plain zero cluster while
// it counts (the cluster it named then counts as a leak if nothing else uses it); -r leaks
// reports them. Standard and extended L2 entries. Output, exit status and file byte-identical;
// every prefix of the writes leaves an image qemu-img check reads, no more damaged than before.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu } from '../helpers/oracles.ts';
import { editU64, l2Entry, readU64, writeU64 } from './qcow2-edit.ts';
import { assertPrefixesSafe, qemuOk, assertRepairsMatch } from './repair-more-matrix.ts';
import { RepairDirs, planPrefix } from './repair-harness.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { checkQcow2 } from '../../src/formats/qcow2/check.ts';
import { repairQcow2 } from '../../src/formats/qcow2/repair-refcounts.ts';

const dirs = new RepairDirs();
const images: Record<string, Uint8Array> = {};
const ZERO = 1n;
const COPIED = 1n << 63n;

function prealloc(name: string, extended: boolean, edit: (path: string) => void): Uint8Array {
  const path = join(dirs.root, name);
  qemuOk(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', `extended_l2=${extended ? 'on' : 'off'}`, path, '4M']));
  qemuOk(runQemu('7.2', ['-c', 'write -P 0x5 0 128k', path], {}, 'qemu-io'));
  edit(path);
  return new Uint8Array(readFileSync(path));
}

before(() => {
  // The second data cluster's entry made a preallocated zero cluster 512 bytes into it.
  images['a data cluster turned misaligned preallocated'] = prealloc('a.qcow2', false, (p) => editU64(p, l2Entry(p, 0, 1), (v) => v | 0x200n | ZERO));
  // A new entry naming a misaligned offset inside the first data cluster (still used by entry 0).
  images['a misaligned preallocated entry into a used cluster'] = prealloc('b.qcow2', false, (p) => {
    const first = readU64(p, l2Entry(p, 0, 0)) & 0x00fffffffffffe00n;
    writeU64(p, l2Entry(p, 0, 5), (first + 0x400n) | ZERO | COPIED);
  });
  // Extended L2: entry 1 misaligned with an all-zero bitmap (no data): a preallocated cluster.
  images['extended L2, misaligned preallocated'] = prealloc('c.qcow2', true, (p) => {
    const at = l2Entry(p, 0, 1, 16);
    editU64(p, at, (v) => v | 0x200n);
    writeU64(p, at + 8, 0xffffffff00000000n);
  });
});

after(() => dirs.remove());

test('check -r leaks|all on misaligned preallocated zero clusters: output and file byte-identical to qemu-img', () => {
  assertRepairsMatch(dirs, images, 'a.qcow2', {
    run: (name) => ({ sandboxed: name.startsWith('extended') }),
    also: (r, c, label) => c.mode === 'all' && assert.match(r.qemu.stderr, /^Repairing offset=[0-9a-f]+: Preallocated cluster is not properly aligned/m, label),
  });
});

test('every prefix of a misaligned preallocated cluster repair leaves an image qemu-img check reads, no more damaged', () => {
  const name = 'a data cluster turned misaligned preallocated';
  const path = join(dirs.root, 'prefix.qcow2');
  const total = assertPrefixesSafe(name, path, images[name], (n) => planPrefix(path, images[name], n, qcow2Driver, checkQcow2, repairQcow2));
  assert.ok(total >= 2, 'the plan writes');
  assert.equal(JSON.parse(runQemu('7.2', ['check', '--output=json', path]).stdout).corruptions, undefined, 'repaired');
});
