// check -r on qcow2 images with persistent bitmaps, against qemu-img 7.2 and 10.0: qemu's writable
// open marks the bitmaps in use, the repair runs, the second check reports, and the close stores
// the bitmaps anew through the allocator (over clusters the repair freed). Output, exit status and
// the repaired file must match byte for byte; every prefix of the writes (the repair's, then the
// close's) must leave an image qemu-img check still opens, with no more damage than before.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { setRefcount16 } from './qcow2-edit.ts';
import { assertPrefixesSafe, qemuOk, assertRepairsMatch } from './repair-more-matrix.ts';
import { tiered } from '../helpers/long.ts';
import { RepairDirs, assertSameRun, planPrefix } from './repair-harness.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { checkQcow2 } from '../../src/formats/qcow2/check.ts';
import { repairQcow2 } from '../../src/formats/qcow2/repair-refcounts.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;
const images: Record<string, Uint8Array> = {};

/** A 4 MiB qcow2 with data and two bitmaps (one with dirty bits), then `edit` on the file. */
function withBitmaps(name: string, edit: (path: string) => void): Uint8Array {
  const path = join(dirs.root, name);
  qemuOk(runQemu('7.2', ['create', '-q', '-f', 'qcow2', path, '4M']));
  qemuOk(runQemu('7.2', ['-c', 'write -P 0x5 0 128k', path], {}, 'qemu-io'));
  qemuOk(runQemu('7.2', ['bitmap', '--add', path, 'b0']));
  qemuOk(runQemu('7.2', ['bitmap', '--add', '-g', '128k', path, 'b1']));
  // Writes while the bitmaps are enabled set their bits: b0's table gets a data cluster.
  qemuOk(runQemu('7.2', ['-c', 'write -P 0x6 1M 64k', path], {}, 'qemu-io'));
  edit(path);
  return new Uint8Array(readFileSync(path));
}

/** Grows the file to `clusters` clusters (zeros) so that leaks can lie inside it. */
const grow = (path: string, clusters: number) => truncateSync(path, clusters * CLUSTER);
const clustersOf = (path: string) => Math.ceil(readFileSync(path).length / CLUSTER);

before(() => {
  images.clean = withBitmaps('clean.qcow2', () => {});
  images.leaks = withBitmaps('leaks.qcow2', (p) => {
    const end = clustersOf(p);
    grow(p, end + 3);
    setRefcount16(p, end, 1);
    setRefcount16(p, end + 2, 2);
  });
  // Cluster 3 is the L1 table: a refcount of 2 is a leak, and breaks its COPIED flag.
  images['L1 counted twice'] = withBitmaps('l1.qcow2', (p) => setRefcount16(p, 3, 2));
  // A stored refcount of 0 under a reference: -r all rebuilds the refcount structure, -r leaks fails.
  images['a data cluster with refcount 0 (rebuild)'] = withBitmaps('rebuild.qcow2', (p) => {
    const end = clustersOf(p);
    grow(p, end + 1);
    setRefcount16(p, 5, 0);
  });
});

after(() => dirs.remove());

test('check -r leaks|all on images with persistent bitmaps: output and file byte-identical to qemu-img', () => {
  assertRepairsMatch(dirs, images, 'a.qcow2', {
    also: (r, c, label) => assert.ok(!r.qemuFile.equals(Buffer.from(images[c.name])), `${label}: qemu changed the file (bitmaps stored anew)`),
  });
});

test('check -r all --output=json on a bitmap image with leaks, through the sandbox', () => {
  // One oracle in the short tier (the matrix above runs both), both in the long tier.
  for (const version of tiered(VERSIONS, (v) => v === '10.0')) {
    const r = dirs.run(version, 'a.qcow2', images.leaks, ['check', '-r', 'all', '--output=json', 'a.qcow2'], { sandboxed: true });
    assertSameRun(r, version);
    assert.match(r.qemu.stdout, /"leaks-fixed": 2/);
    assert.ok(r.qemuFile.equals(r.instarFile), `${version}: repaired files differ`);
  }
});

test('every prefix of a bitmap image repair (then of its close) leaves an image qemu-img check opens, no more damaged', () => {
  // The rebuild (more writes) in the short tier, the leaks too in the long tier.
  for (const name of tiered(['leaks', 'a data cluster with refcount 0 (rebuild)'], (n) => n !== 'leaks')) {
    const path = join(dirs.root, 'prefix.qcow2');
    const total = assertPrefixesSafe(name, path, images[name], (n) => planPrefix(path, images[name], n, qcow2Driver, checkQcow2, repairQcow2));
    assert.ok(total > 3, `${name}: the plan writes`);
  }
});
