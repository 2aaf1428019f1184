// qcow2 block status as qemu answers it (qcow2_get_host_offset, bdrv_co_block_status), compared
// byte for byte with both oracles' `map` on images built here: a run is counted like
// count_contiguous_subclusters (later entries are typed, not checked, so the entries before a
// corrupt one come out first), an invalid extended L2 entry fails the request that reaches it,
// and under metadata preallocation a data cluster past the end of the file reads as zero.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS } from '../../helpers/oracles.ts';
import { qemu, tempDir } from './helpers.ts';

const OFFSET_MASK = 0x00fffffffffffe00n;

/** The file offset of L2 entry `index` of the first L2 table (entries of `entryBytes`). */
function l2EntryAt(image: Buffer, index: number, entryBytes: number): number {
  const l1 = Number(image.readBigUInt64BE(40));
  const l2 = Number(image.readBigUInt64BE(l1) & OFFSET_MASK);
  assert.ok(l2 > 0, 'the image has its first L2 table');
  return l2 + index * entryBytes;
}

/** `map --output=json` by both oracles and instar: stdout, stderr and status must be identical. */
function assertMapAgrees(path: string): { stdout: string; stderr: string; status: number | null }[] {
  return VERSIONS.map((v) => {
    const q = runQemu(v, ['map', '--output=json', path], { timeoutMs: 20_000 });
    const i = runInstar(['map', '--output=json', path, '--qemu-version', v]);
    assert.equal(i.stdout, q.stdout, `${v} stdout`);
    assert.equal(i.stderr, q.stderr, `${v} stderr`);
    assert.equal(i.status, q.status, `${v} status`);
    return q;
  });
}

test('a corrupt L2 entry after a run: the entries before it are reported, then the failure', (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'img');
  qemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '4M']);
  qemu('10.0', ['-c', 'write -P 1 0 64k', '-c', 'write -P 2 1M 4k', img], 'qemu-io');
  const bytes = readFileSync(img);
  // Cluster 214 (between the two runs): an unaligned offset, which only a request's first entry is checked for.
  bytes.writeBigUInt64BE(0xdb18da00n, l2EntryAt(bytes, 214, 8));
  writeFileSync(img, bytes);
  for (const q of assertMapAgrees(img)) {
    assert.equal(q.status, 1);
    assert.match(q.stdout, /"start": 0, "length": 65536, .*"data": true/, 'the data run before the corrupt entry is printed');
  }
});

test('an extended L2 entry with a subcluster both allocated and zero fails the request that reaches it', (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'img');
  qemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', img, '4M']);
  qemu('10.0', ['-c', 'write -P 1 0 128k', '-c', 'write -P 2 192k 64k', '-c', 'write -P 3 512k 64k', img], 'qemu-io');
  const bytes = readFileSync(img);
  // Cluster 8 (all data): subcluster 31 also marked zero. qemu checks the whole bitmap, so the
  // entry is invalid whichever subcluster is asked for, and the hole run from cluster 4 reaches it.
  const at = l2EntryAt(bytes, 8, 16);
  assert.notEqual(bytes.readBigUInt64BE(at) & OFFSET_MASK, 0n, 'cluster 8 is allocated');
  bytes.writeBigUInt64BE(0xffffffffn | (1n << 63n), at + 8);
  writeFileSync(img, bytes);
  for (const q of assertMapAgrees(img)) {
    assert.equal(q.status, 1);
    assert.match(q.stdout, /"start": 131072, /, 'entries before the invalid one are printed');
  }
});

test('metadata preallocation: data clusters past the end of a truncated file read as zero', (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'img');
  qemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', img, '4M']);
  // A zeroed cluster that keeps its allocation breaks the run: the next run starts past the end.
  qemu('10.0', ['-c', 'write -P 7 0 64k', '-c', 'write -z 1M 64k', img], 'qemu-io');
  truncateSync(img, 500_000);
  const size = statSync(img).size;
  for (const q of assertMapAgrees(img)) {
    assert.equal(q.status, 0);
    const pastEnd = q.stdout.split('\n').filter((l) => Number(/"offset": (\d+)/.exec(l)?.[1] ?? -1) > size);
    assert.ok(pastEnd.some((l) => l.includes('"zero": true, "data": true')), 'a data run past the end of the file is reported as zero');
  }
});

test('an external data file cluster mapped anywhere but its own guest offset fails as in qemu', (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'img');
  qemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'data.raw')}`, img, '1M']);
  qemu('10.0', ['-c', 'write -P 1 0 64k', '-c', 'write -P 2 128k 64k', '-c', 'write -P 3 512k 64k', img], 'qemu-io');
  const bytes = readFileSync(img);
  // Cluster 2 (COPIED, as data-file clusters are) pointing at the data file's cluster 3.
  bytes.writeBigUInt64BE((1n << 63n) | 0x30000n, l2EntryAt(bytes, 2, 8));
  writeFileSync(img, bytes);
  for (const q of assertMapAgrees(img)) {
    assert.equal(q.status, 1);
    assert.match(q.stderr, /does not match guest cluster offset: 0x20000, L2 index: 0x2\)/);
    assert.match(q.stdout, /"start": 0, "length": 65536, .*"data": true/, 'the entry before the bad one is printed');
  }
});

test('a data cluster at host offset 2^53 (past the end of the file) reads as zeros, as in qemu', (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'img');
  qemu('10.0', ['create', '-q', '-f', 'qcow2', img, '1M']);
  qemu('10.0', ['-c', 'write -P 1 0 128k', img], 'qemu-io');
  const bytes = readFileSync(img);
  bytes.writeBigUInt64BE((1n << 63n) | 2n ** 53n, l2EntryAt(bytes, 1, 8));
  writeFileSync(img, bytes);
  assertMapAgrees(img);
  for (const v of VERSIONS) {
    const q = runQemu(v, ['compare', img, img], { timeoutMs: 20_000 });
    const i = runInstar(['compare', img, img, '--qemu-version', v]);
    assert.deepEqual([i.stdout, i.stderr, i.status], [q.stdout, q.stderr, q.status], `${v} compare`);
    const outQ = join(dir, `q-${v}.raw`);
    const outI = join(dir, `i-${v}.raw`);
    const cq = runQemu(v, ['convert', '-O', 'raw', img, outQ], { timeoutMs: 20_000 });
    const ci = runInstar(['convert', '-O', 'raw', img, outI, '--qemu-version', v]);
    assert.deepEqual([ci.stdout, ci.stderr, ci.status], [cq.stdout, cq.stderr, cq.status], `${v} convert`);
    assert.equal(cq.status, 0);
    assert.ok(existsSync(outI) && readFileSync(outI).equals(readFileSync(outQ)), `${v}: converted bytes equal`);
    assert.ok(readFileSync(outQ).subarray(65536, 131072).every((b) => b === 0), 'the far cluster reads as zeros');
  }
});
