// check -r on qcow2 images whose refcount table names refcount blocks past the end of the file,
// against qemu-img 7.2 and 10.0: -r all grows the file to each such block (a block below an
// earlier growth is inside by then), then rebuilds the refcount structure; -r leaks fails ("need
// to rebuild"). Output, exit status and file byte-identical; a growth past 1 GiB is refused with
// nothing written; every prefix of the writes leaves an image qemu-img check reads, no more
// damaged than before (instar grows the file once the header names the new structure).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu } from '../helpers/oracles.ts';
import { layout, writeU64 } from './qcow2-edit.ts';
import { assertPrefixesSafe, qemuOk, assertRepairsMatch } from './repair-more-matrix.ts';
import { RepairDirs, planPrefix } from './repair-harness.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { checkQcow2 } from '../../src/formats/qcow2/check.ts';
import { repairQcow2 } from '../../src/formats/qcow2/repair-refcounts.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;
const images: Record<string, Uint8Array> = {};

/** A 4 MiB qcow2 (7 clusters) with 128 KiB of data, then refcount table entries replaced. */
function pastEnd(name: string, entries: [number, number][]): Uint8Array {
  const path = join(dirs.root, name);
  qemuOk(runQemu('7.2', ['create', '-q', '-f', 'qcow2', path, '4M']));
  qemuOk(runQemu('7.2', ['-c', 'write -P 0x5 0 128k', path], {}, 'qemu-io'));
  assert.equal(readFileSync(path).length, 7 * CLUSTER);
  for (const [index, cluster] of entries) writeU64(path, layout(path).refTableOffset + 8 * index, BigInt(cluster * CLUSTER));
  return new Uint8Array(readFileSync(path));
}

before(() => {
  images['the only block just past the end'] = pastEnd('a.qcow2', [[0, 8]]);
  images['the only block far past the end'] = pastEnd('b.qcow2', [[0, 20]]);
  images['two blocks, the second inside after the first growth'] = pastEnd('c.qcow2', [[0, 20], [1, 12]]);
  images['two blocks, each grown to'] = pastEnd('d.qcow2', [[0, 9], [1, 15]]);
});

after(() => dirs.remove());

test('check -r leaks|all with refcount blocks past the end: output and file byte-identical to qemu-img', () => {
  assertRepairsMatch(dirs, images, 'a.qcow2', {
    also: (r, c, label) => c.mode === 'all' && assert.ok(r.qemuFile.length > images[c.name].length, `${label}: qemu grew the file`),
  });
});

test('check -r all on a refcount block more than 1 GiB past the end is refused, through the sandbox', () => {
  const bytes = pastEnd('far.qcow2', [[0, 20_000]]);
  // qemu would grow the file by 1.3 GB (sparse): not run.
  const r = dirs.run('10.0', 'a.qcow2', bytes, ['check', '-r', 'all', 'a.qcow2'], { sandboxed: true, skipQemu: true });
  assert.equal(r.instar.stderr, 'qemu-img: instar cannot repair this qcow2 image (a refcount block lies more than 1 GiB past the end of the file); nothing was written\n');
  assert.equal(r.instar.status, 1);
  assert.ok(r.instarFile.equals(bytes), 'unchanged');
});

test('every prefix of a repair that grows the file leaves an image qemu-img check reads, no more damaged', () => {
  for (const name of ['the only block far past the end', 'two blocks, each grown to']) {
    const path = join(dirs.root, 'prefix.qcow2');
    assertPrefixesSafe(name, path, images[name], (n) => planPrefix(path, images[name], n, qcow2Driver, checkQcow2, repairQcow2));
    assert.equal(JSON.parse(runQemu('7.2', ['check', '--output=json', path]).stdout).corruptions, undefined, `${name}: repaired`);
  }
});
