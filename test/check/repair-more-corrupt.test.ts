// check -r on qcow2 images with the corrupt bit set, against qemu-img 7.2 and 10.0: qemu's check
// opens them read-write (BDRV_O_CHECK), repairs, and clears the bit (qcow2_mark_consistent) only
// when the repair leaves no corruption and no check error: -r leaks on an image that needs a
// rebuild leaves it set. Output, exit status and file byte-identical; every prefix of the writes
// leaves an image qemu-img check reads, no more damaged than before (the bit is cleared last).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { editU64, setRefcount16 } from './qcow2-edit.ts';
import { assertPrefixesSafe, qemuOk, assertRepairsMatch } from './repair-more-matrix.ts';
import { tiered } from '../helpers/long.ts';
import { RepairDirs, assertSameRun, planPrefix } from './repair-harness.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { checkQcow2 } from '../../src/formats/qcow2/check.ts';
import { repairQcow2 } from '../../src/formats/qcow2/repair-refcounts.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;
const CORRUPT = 2n;
const images: Record<string, Uint8Array> = {};

/** A 4 MiB qcow2 with 128 KiB of data, the corrupt bit set, then `edit` on the file. */
function corrupt(name: string, edit: (path: string) => void): Uint8Array {
  const path = join(dirs.root, name);
  qemuOk(runQemu('7.2', ['create', '-q', '-f', 'qcow2', path, '4M']));
  qemuOk(runQemu('7.2', ['-c', 'write -P 0x5 0 128k', path], {}, 'qemu-io'));
  editU64(path, 72, (v) => v | CORRUPT);
  edit(path);
  return new Uint8Array(readFileSync(path));
}

const growBy = (path: string, n: number): number => {
  const end = Math.ceil(readFileSync(path).length / CLUSTER);
  truncateSync(path, (end + n) * CLUSTER);
  return end;
};

before(() => {
  images['nothing else wrong'] = corrupt('a.qcow2', () => {});
  images['a leak'] = corrupt('b.qcow2', (p) => setRefcount16(p, growBy(p, 1), 1));
  images['a data cluster with refcount 0 (rebuild)'] = corrupt('c.qcow2', (p) => {
    growBy(p, 1);
    setRefcount16(p, 5, 0);
  });
  images['the L1 table counted twice (a leak and its COPIED flag)'] = corrupt('d.qcow2', (p) => setRefcount16(p, 3, 2));
});

after(() => dirs.remove());

const corruptBit = (file: Buffer) => (file.readBigUInt64BE(72) & CORRUPT) !== 0n;

test('check -r leaks|all on corrupt-marked images: output and file byte-identical to qemu-img, the bit cleared as qemu clears it', () => {
  assertRepairsMatch(dirs, images, 'a.qcow2', {
    also: (r, c, label) => assert.equal(corruptBit(r.qemuFile), c.name.includes('rebuild') && c.mode === 'leaks', `${label}: qemu's corrupt bit`),
  });
});

test('check -r all on a corrupt-marked image through the sandbox', () => {
  // One oracle in the short tier (the matrix above runs both), both in the long tier.
  for (const version of tiered(VERSIONS, (v) => v === '10.0')) {
    const r = dirs.run(version, 'a.qcow2', images['a leak'], ['check', '-r', 'all', '--output=json', 'a.qcow2'], { sandboxed: true });
    assertSameRun(r, version);
    assert.ok(r.qemuFile.equals(r.instarFile), `${version}: repaired files differ`);
    assert.ok(!corruptBit(r.instarFile), `${version}: the bit cleared`);
  }
});

test('every prefix of a corrupt-marked image repair leaves an image qemu-img check reads, no more damaged', () => {
  // The rebuild (more writes) in the short tier, the leak too in the long tier.
  for (const name of tiered(['a leak', 'a data cluster with refcount 0 (rebuild)'], (n) => n !== 'a leak')) {
    const path = join(dirs.root, 'prefix.qcow2');
    assertPrefixesSafe(name, path, images[name], (n) => planPrefix(path, images[name], n, qcow2Driver, checkQcow2, repairQcow2), (n, total) => {
      assert.equal(corruptBit(readFileSync(path)), n < total, `${name} after ${n} writes: marked corrupt until the last write`);
    });
  }
});
