// check -r for qed, against qemu-img 7.2 and 10.0: invalid L1/L2 offsets cleared (in either -r
// mode), leaks and clusters used twice left, the need-check bit cleared (even with clusters used
// twice left, as measured). Output, exit status and file byte-identical; every prefix of the writes leaves an image
// qemu-img check reads, no more damaged than before.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, readSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { assertPrefixesSafe, qemuOk, assertRepairsMatch } from './repair-more-matrix.ts';
import { tiered } from '../helpers/long.ts';
import { RepairDirs, assertSameRun, planPrefix } from './repair-harness.ts';
import { qedDriver } from '../../src/formats/qed/driver.ts';
import { repairQed } from '../../src/formats/qed/repair.ts';
import { checkQed } from '../../src/formats/qed/check.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;
const images: Record<string, Uint8Array> = {};

/** Reads or replaces the little-endian u64 at `pos`. */
function u64(path: string, pos: number, value?: bigint): bigint {
  const fd = openSync(path, 'r+');
  try {
    const b = Buffer.alloc(8);
    if (value === undefined) {
      readSync(fd, b, 0, 8, pos);
      return b.readBigUInt64LE(0);
    }
    b.writeBigUInt64LE(value);
    writeSync(fd, b, 0, 8, pos);
    return value;
  } finally {
    closeSync(fd);
  }
}

const L1 = 40;
const needCheck = (p: string) => u64(p, 16, u64(p, 16) | 2n);
const l2Of = (p: string) => Number(u64(p, Number(u64(p, L1))));
/** L2 entry 1 past the end of the file. */
const badL2 = (p: string) => u64(p, l2Of(p) + 8, 1000n * BigInt(CLUSTER));
/** L1 entry 1 unaligned. */
const badL1 = (p: string) => u64(p, Number(u64(p, L1)) + 8, 10n ** 10n + 512n);
const leak = (p: string) => truncateSync(p, readFileSync(p).length + 2 * CLUSTER);
/** L2 entry 1 names entry 0's cluster: used twice, which qemu does not fix. */
const twice = (p: string) => u64(p, l2Of(p) + 8, u64(p, l2Of(p)));

function qed(name: string, edits: ((p: string) => unknown)[]): Uint8Array {
  const path = join(dirs.root, name);
  qemuOk(runQemu('7.2', ['create', '-q', '-f', 'qed', path, '4M']));
  qemuOk(runQemu('7.2', ['-f', 'qed', '-c', 'write -P 0x5 0 128k', path], {}, 'qemu-io'));
  for (const e of edits) e(path);
  return new Uint8Array(readFileSync(path));
}

before(() => {
  images.clean = qed('a.qed', []);
  images['need-check bit'] = qed('b.qed', [needCheck]);
  images['an L2 entry past the end'] = qed('c.qed', [badL2]);
  images['an unaligned L1 entry, need-check'] = qed('d.qed', [badL1, needCheck]);
  images.leaks = qed('e.qed', [leak]);
  images['everything, need-check'] = qed('f.qed', [needCheck, badL2, badL1, leak]);
  images['a cluster used twice, need-check'] = qed('g.qed', [twice, badL1, needCheck]);
});

after(() => dirs.remove());

test('check -r leaks|all on qed images: output and file byte-identical to qemu-img', () => {
  assertRepairsMatch(dirs, images, 'a.qed', {
    also: (r, _c, label) => assert.equal(r.qemuFile.readBigUInt64LE(16) & 2n, 0n, `${label}: qemu's need-check bit cleared`),
  });
});

test('check -r all --output=json on a qed image through the sandbox', () => {
  // One oracle in the short tier (the matrix above runs both), both in the long tier.
  for (const version of tiered(VERSIONS, (v) => v === '7.2')) {
    const r = dirs.run(version, 'a.qed', images['everything, need-check'], ['check', '-r', 'all', '--output=json', 'a.qed'], { sandboxed: true });
    assertSameRun(r, version);
    assert.match(r.qemu.stdout, /"corruptions-fixed": 2/);
    assert.ok(r.qemuFile.equals(r.instarFile), `${version}: repaired files differ`);
  }
});

test('every prefix of a qed repair leaves an image qemu-img check reads, no more damaged', () => {
  const path = join(dirs.root, 'prefix.qed');
  const bytes = images['everything, need-check'];
  const total = assertPrefixesSafe('qed', path, bytes, (n) => planPrefix(path, bytes, n, qedDriver, checkQed, repairQed), (n, all) => {
    assert.equal((readFileSync(path).readBigUInt64LE(16) & 2n) !== 0n, n < all, `after ${n} writes: need-check until the last write`);
  });
  assert.equal(total, 3);
});
