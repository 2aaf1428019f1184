// The library's map() keeps qemu's int64 positions exact: JSON.parse would round anything past
// 2^53 (2^62 + 512 becomes 2^62). Numbers below 2^53, bigints above, equal to what qemu-img
// prints, read digit for digit. Images: a qcow2 with a 2^61 virtual size made by qemu-img create
// (map from near its end: qemu walks the whole disk 1 GiB at a time), and VMDK flat extents whose
// host offset is 2^62 + 512 or wraps to -512. The CLI's own map output for them is checked
// against both oracles too (exact decimal printing, sandbox protocol).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageDir, assertSameOutput } from '../differential/harness.ts';
import { ROOT, runQemu } from '../helpers/oracles.ts';

const lib = (await import(join(ROOT, 'dist', 'index.mjs'))) as typeof import('../../src/index.ts');

const SIZE = 2n ** 61n;
const MiB = 1024n * 1024n;
const NEAR_END = SIZE - 4n * MiB;
/** Flat extent starts, in sectors: 2^62 + 512 bytes (no double holds it) and -512 (wrapped). */
const HUGE_SECTOR = '9007199254740993';
const WRAPPED_SECTOR = '36028797018963967';

/** qemu's JSON entries with every integer as a bigint, read from the digits themselves. */
function exactEntries(json: string): Record<string, bigint | boolean>[] {
  return [...json.matchAll(/\{([^}]*)\}/g)].map((m) =>
    Object.fromEntries([...m[1].matchAll(/"(\w+)": (-?\d+|true|false)/g)].map(([, key, v]) => [key, v === 'true' ? true : v === 'false' ? false : BigInt(v)])),
  );
}

/** The library's entries in the same terms; checks each position's kind on the way. */
function asExact(entries: import('../../src/index.ts').MapEntry[]): Record<string, bigint | boolean>[] {
  return entries.map((e) =>
    Object.fromEntries(Object.entries(e).map(([key, v]) => {
      if (typeof v === 'boolean') return [key, v];
      const n = BigInt(v as number | bigint);
      const safe = n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER);
      assert.equal(typeof v, safe ? 'number' : 'bigint', `${key} ${n} comes back as a ${safe ? 'number' : 'bigint'}`);
      return [key, n];
    })),
  );
}

describe('library map(): exact int64 positions', () => {
  let dir: ImageDir;
  before(() => {
    dir = new ImageDir('api-map-exact');
    dir.img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', 'huge.qcow2', String(SIZE));
    dir.io('-c', `write -P 1 ${SIZE - 2n * MiB + 512n} 4096`, 'huge.qcow2');
    writeFileSync(dir.path('flat.raw'), randomBytes(4096));
    for (const [name, sector] of [['far.vmdk', HUGE_SECTOR], ['wrapped.vmdk', WRAPPED_SECTOR]]) {
      writeFileSync(dir.path(name), `version=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "flat.raw" ${sector}\n`);
    }
  });
  after(() => dir.remove());

  it('qcow2 of 2^61 bytes from near its end: bigints equal to qemu-img 10.0 digit for digit', async () => {
    const args = ['map', '--output=json', `--start-offset=${NEAR_END}`, dir.path('huge.qcow2')];
    const theirs = runQemu('10.0', args);
    assert.equal(theirs.status, 0, theirs.stderr);
    const expected = exactEntries(theirs.stdout);
    // Guard: qemu's answer really has positions past 2^53.
    assert.equal(expected[0].start, NEAR_END);
    for (const sandbox of ['auto', 'none'] as const) {
      const ours = await lib.map(dir.path('huge.qcow2'), { qemuVersion: '10.0', sandbox, startOffset: NEAR_END });
      assert.deepEqual(asExact(ours), expected, sandbox);
      assert.equal(ours[0].start, NEAR_END);
    }
  });

  it('qcow2 of 2^61 bytes, whole disk: one hole entry and the data cluster at the end', async () => {
    const ours = await lib.map(dir.path('huge.qcow2'), { sandbox: 'none', qemuVersion: '7.2' });
    // 0 and 2 MiB are safe numbers; the rest are bigints.
    assert.deepEqual(ours.map((e) => [e.start, e.length, e.data]), [[0, SIZE - 2n * MiB, false], [SIZE - 2n * MiB, 2 * 1024 * 1024, true]]);
  });

  it('VMDK flat extents: host offset 2^62 + 512 as a bigint, -512 as a number, as qemu prints them', async () => {
    for (const name of ['far.vmdk', 'wrapped.vmdk']) {
      const theirs = runQemu('7.2', ['map', '--output=json', dir.path(name)]);
      assert.equal(theirs.status, 0, theirs.stderr);
      const ours = await lib.map(dir.path(name), { qemuVersion: '7.2' });
      assert.deepEqual(asExact(ours), exactEntries(theirs.stdout), name);
    }
    assert.equal((await lib.map(dir.path('far.vmdk'), { qemuVersion: '7.2' }))[0].offset, 2n ** 62n + 512n);
    assert.equal((await lib.map(dir.path('wrapped.vmdk'), { qemuVersion: '7.2' }))[0].offset, -512);
  });

  it('small images keep plain numbers', async () => {
    const ours = await lib.map(dir.path('flat.raw'), { format: 'raw', sandbox: 'none' });
    assert.deepEqual(ours, [{ start: 0, length: 4096, depth: 0, present: true, zero: false, data: true, offset: 0 }]);
  });

  it('the CLI prints the same digits as both oracles (json and human, sandboxed and not)', async () => {
    const near = `--start-offset=${NEAR_END}`;
    await assertSameOutput(dir.dir, ['map', '--output=json', near, 'huge.qcow2']);
    await assertSameOutput(dir.dir, ['map', '--output=json', near, 'huge.qcow2'], { sandboxed: true });
    await assertSameOutput(dir.dir, ['map', near, 'huge.qcow2'], { sandboxed: true });
  });
});
