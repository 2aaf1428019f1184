// check -r on qcow2 images with an external data file (data_file, data_file_raw), against
// qemu-img 7.2 and 10.0: references into the data file are not refcounted, so leaks and refcount
// errors lie in the qcow2 file's metadata; a data cluster's COPIED flag goes by refcount 1. The
// qcow2 file and the data file must end byte-identical to qemu's, the output the same. (The repair
// is the same planner as without a data file: its crash prefixes are covered in repair-qcow2*.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, truncateSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { editU64, l2Entry, setRefcount16 } from './qcow2-edit.ts';
import { assertRepairsMatch, qemuOk } from './repair-more-matrix.ts';
import { tiered } from '../helpers/long.ts';
import { RepairDirs, assertSameRun } from './repair-harness.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;
const images: Record<string, { qcow2: Uint8Array; raw: Uint8Array }> = {};

/** A 4 MiB qcow2 over the data file d.raw, 128 KiB written, then `edit` on the qcow2 file. */
function withDataFile(raw: boolean, edit: (path: string) => void): { qcow2: Uint8Array; raw: Uint8Array } {
  qemuOk(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', `data_file=d.raw,data_file_raw=${raw ? 'on' : 'off'}`, 'a.qcow2', '4M'], { cwd: dirs.root }));
  qemuOk(runQemu('7.2', ['-c', 'write -P 0x5 0 128k', 'a.qcow2'], { cwd: dirs.root }, 'qemu-io'));
  edit(join(dirs.root, 'a.qcow2'));
  return { qcow2: new Uint8Array(readFileSync(join(dirs.root, 'a.qcow2'))), raw: new Uint8Array(readFileSync(join(dirs.root, 'd.raw'))) };
}

const clustersOf = (path: string) => Math.ceil(readFileSync(path).length / CLUSTER);

/** Two leaked clusters past the old end of the qcow2 file (one holding bytes qemu discards). */
function leaks(p: string): void {
  const end = clustersOf(p);
  truncateSync(p, (end + 2) * CLUSTER);
  setRefcount16(p, end, 1);
  setRefcount16(p, end + 1, 3);
}

before(() => {
  images['leaks'] = withDataFile(false, leaks);
  images['leaks, data_file_raw'] = withDataFile(true, leaks);
  // The second data cluster's COPIED flag cleared (the first sits at offset 0: its entry would
  // read as unallocated): a data file's cluster counts as refcount 1.
  images['a data cluster without COPIED'] = withDataFile(false, (p) => editU64(p, l2Entry(p, 0, 1), (v) => v & ~(1n << 63n)));
  // The L2 table's refcount 0: -r all rebuilds the refcount structure.
  images['an L2 table with refcount 0 (rebuild)'] = withDataFile(false, (p) => {
    truncateSync(p, (clustersOf(p) + 1) * CLUSTER);
    setRefcount16(p, 4, 0);
  });
});

after(() => dirs.remove());

test('check -r leaks|all on images with a data file: output, qcow2 file and data file byte-identical to qemu-img', () => {
  const qcow2s = Object.fromEntries(Object.entries(images).map(([name, { qcow2 }]) => [name, qcow2]));
  const rawOf = (p: string) => readFileSync(join(dirname(p), 'd.raw'));
  assertRepairsMatch(dirs, qcow2s, 'a.qcow2', {
    run: (name) => ({ files: { 'd.raw': images[name].raw } }),
    also: (r, _c, label) => {
      assert.notEqual(r.qemu.stdout + r.qemu.stderr, '', `${label}: qemu checked`);
      assert.ok(rawOf(r.qemuPath).equals(rawOf(r.instarPath)), `${label}: data files differ`);
    },
  });
});

test('check -r all on a data-file image through the sandbox', () => {
  // One oracle in the short tier (the matrix above runs both), both in the long tier.
  for (const version of tiered(VERSIONS, (v) => v === '7.2')) {
    const { qcow2, raw } = images['a data cluster without COPIED'];
    const r = dirs.run(version, 'a.qcow2', qcow2, ['check', '-r', 'all', '--output=json', 'a.qcow2'], { sandboxed: true, files: { 'd.raw': raw } });
    assertSameRun(r, version);
    assert.match(r.qemu.stdout, /"corruptions-fixed": 1/);
    assert.ok(r.qemuFile.equals(r.instarFile), `${version}: repaired files differ`);
  }
});
