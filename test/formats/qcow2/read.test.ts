// Reading guest data: instar's read() must give the bytes `qemu-img convert -O raw` gives, and
// extent() must tile the disk exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { FdDevice } from '../../../src/io/fd-device.ts';
import { openQcow2, qcow2Driver } from '../../../src/formats/qcow2/driver.ts';
import { ImageError, type Image } from '../../../src/formats/types.ts';
import { qemu, tempDir } from './helpers.ts';
import { runQemu } from '../../helpers/oracles.ts';
import { Qcow2CorruptionError } from '../../../src/formats/qcow2/clusters.ts';

function withImage<T>(path: string, fn: (img: Image) => T): T {
  const fd = openSync(path, 'r');
  try {
    return fn(qcow2Driver.open(new FdDevice(fd, false), { writable: false }));
  } finally {
    closeSync(fd);
  }
}

const SIZE = 4 * 1024 * 1024;
/** qemu-io commands that leave data, zeroes, holes and (optionally) compressed clusters. */
const WRITES = [
  'write -P 0x11 0 64k',
  'write -P 0x22 100k 10k',
  'write -z 256k 128k',
  'write -P 0x33 1M 300k',
  'discard 1088k 64k',
  'write -P 0x44 4032k 64k',
];

const cases: [string, string, string[]][] = [
  ['v3 default', '-o compat=1.1', WRITES],
  ['v2', '-o compat=0.10', WRITES],
  ['512-byte clusters', '-o cluster_size=512', WRITES],
  ['extended L2, partial subclusters', '-o extended_l2=on', [...WRITES, 'write -P 0x55 2M 3k', 'write -z 2100k 2k']],
  ['compressed clusters (zlib)', '-o compat=1.1', ['write -c -P 0x66 0 64k', 'write -c -P 0x77 192k 64k', 'write -P 0x88 3M 64k']],
  ['compressed clusters (zstd)', '-o compression_type=zstd', ['write -c -P 0x66 0 64k', 'write -c -P 0x77 192k 64k', 'write -P 0x88 3M 64k']],
  ['compressed clusters with extended L2 (zstd)', '-o compression_type=zstd,extended_l2=on', ['write -c -P 0x66 0 64k', 'write -P 0x99 100k 2k']],
];

for (const [name, opts, writes] of cases) {
  test(`read: ${name} equals qemu-img convert -O raw`, (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'img.qcow2');
    qemu('10.0', ['create', '-q', '-f', 'qcow2', ...opts.split(' '), path, String(SIZE)]);
    for (const w of writes) qemu('10.0', ['-c', w, path], 'qemu-io');
    const rawPath = join(dir, 'img.raw');
    qemu('7.2', ['convert', '-O', 'raw', path, rawPath]);
    const expected = readFileSync(rawPath);
    withImage(path, (img) => {
      assert.equal(img.virtualSize, SIZE);
      const whole = Buffer.alloc(SIZE);
      img.read(whole, 0);
      assert.ok(whole.equals(expected), 'whole-disk read differs');
      // Odd-sized reads that straddle cluster and subcluster boundaries.
      // Then parts and wholes of clusters in turn: a compressed cluster is decoded whole into the
      // caller's buffer or kept for the reads of its other parts; neither may leak into the other.
      const turns = [[0, 1000], [192 * 1024, 64 * 1024], [3 * 1024 * 1024, 1000], [192 * 1024 + 5, 7], [1000, 64 * 1024 - 1000], [0, 64 * 1024], [5, 7]];
      // One buffer for all of them, as the copy loop reuses its buffers.
      const scratch = Buffer.alloc(64 * 1024);
      for (const [off, len] of [[100 * 1024 - 7, 10 * 1024 + 14], [65535, 3], [2 * 1024 * 1024 + 1000, 5000], [SIZE - 10, 10], ...turns]) {
        const part = len <= scratch.length ? scratch.subarray(0, len).fill(0xee) : Buffer.alloc(len);
        img.read(part, off);
        assert.ok(part.equals(expected.subarray(off, off + len)), `read at ${off}+${len}`);
      }
      let pos = 0;
      while (pos < SIZE) {
        const e = img.extent(pos, SIZE - pos);
        assert.equal(e.offset, pos);
        assert.ok(e.length > 0 && pos + e.length <= SIZE, `extent at ${pos}: ${e.length}`);
        if (e.kind === 'zero' || e.kind === 'unallocated') {
          assert.ok(expected.subarray(pos, pos + e.length).every((b) => b === 0), `${e.kind} extent at ${pos} is not zero`);
        }
        pos += e.length;
      }
    });
  });
}

test('read: a backing file that is not attached is an error, not zeros', (t) => {
  const dir = tempDir(t);
  qemu('7.2', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '1M']);
  const top = join(dir, 'top.qcow2');
  qemu('7.2', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', top]);
  withImage(top, (img) => assert.throws(() => img.read(Buffer.alloc(512), 0), /needs the backing image attached/));
});

test('read: through a backing image and from an external data file, as qemu-img convert', (t) => {
  const dir = tempDir(t);
  const base = join(dir, 'base.qcow2');
  qemu('10.0', ['create', '-q', '-f', 'qcow2', base, '2M']);
  qemu('10.0', ['-c', 'write -P 0xaa 0 1M', base], 'qemu-io');
  const top = join(dir, 'top.qcow2');
  qemu('10.0', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, String(SIZE)]);
  qemu('10.0', ['-c', 'write -P 0xbb 512k 64k', top], 'qemu-io');
  qemu('10.0', ['-c', 'write -z 700k 64k', top], 'qemu-io');
  const rawPath = join(dir, 'top.raw');
  qemu('7.2', ['convert', '-O', 'raw', top, rawPath]);
  const expected = readFileSync(rawPath);
  const baseFd = openSync(base, 'r');
  const topFd = openSync(top, 'r');
  try {
    const img = openQcow2(new FdDevice(topFd, false), { writable: false });
    img.attachBacking(qcow2Driver.open(new FdDevice(baseFd, false), { writable: false }));
    const whole = Buffer.alloc(SIZE);
    img.read(whole, 0);
    assert.ok(whole.equals(expected), 'read through backing differs');
    const e = img.extent(0, SIZE);
    assert.deepEqual([e.kind, e.depth, e.length], ['data', 1, 512 * 1024]);
  } finally {
    closeSync(baseFd);
    closeSync(topFd);
  }

  const withData = join(dir, 'ext.qcow2');
  const dataName = join(dir, 'fresh-data.bin');
  qemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${dataName}`, withData, '1M']);
  qemu('10.0', ['-c', 'write -P 0xcc 64k 64k', withData], 'qemu-io');
  qemu('7.2', ['convert', '-O', 'raw', withData, rawPath]);
  const fd = openSync(withData, 'r');
  const dataFd = openSync(dataName, 'r');
  try {
    const noData = qcow2Driver.open(new FdDevice(fd, false), { writable: false });
    assert.throws(() => noData.read(Buffer.alloc(512), 0), /external data file .* was not provided/);
    const devices = new Map([[dataName, new FdDevice(dataFd, false)]]);
    const img = qcow2Driver.open(new FdDevice(fd, false), { writable: false, devices });
    const whole = Buffer.alloc(1024 * 1024);
    img.read(whole, 0);
    assert.ok(whole.equals(readFileSync(rawPath)), 'read from data file differs');
  } finally {
    closeSync(fd);
    closeSync(dataFd);
  }
});

test('read: corrupt L1/L2 entries fail with EIO and qemu-img convert\'s corruption warning', (t) => {
  const dir = tempDir(t);
  const mutations: [string, string, (b: Buffer) => void][] = [
    ['unaligned L2 table', 'compat=1.1', (b) => { const l1 = Number(b.readBigUInt64BE(40)); b.writeBigUInt64BE(b.readBigUInt64BE(l1) + 0x200n, l1); }],
    ['unaligned data cluster', 'compat=1.1', (b) => { const l2 = l2At(b); b.writeBigUInt64BE(b.readBigUInt64BE(l2) + 0x200n, l2); }],
    ['zero flag in a v2 image', 'compat=0.10', (b) => { const l2 = l2At(b); b.writeBigUInt64BE(b.readBigUInt64BE(l2) | 1n, l2); }],
  ];
  for (const [name, compat, mutate] of mutations) {
    const path = join(dir, 'c.qcow2');
    qemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', compat, path, '1M']);
    qemu('7.2', ['-c', 'write -P 1 0 64k', path], 'qemu-io');
    const bytes = readFileSync(path);
    mutate(bytes);
    writeFileSync(path, bytes);
    const r = runQemu('10.0', ['convert', '-O', 'raw', path, join(dir, 'out.raw')]);
    assert.equal(r.status, 1, name);
    const warning = r.stderr.split('\n')[0];
    withImage(path, (img) => {
      assert.throws(() => img.read(Buffer.alloc(512), 0), (e: unknown) => {
        assert.ok(e instanceof Qcow2CorruptionError, name);
        assert.equal(e.message, 'Input/output error');
        assert.equal(e.warning, warning, name);
        return true;
      });
      // qemu reports a corruption once per image.
      assert.throws(() => img.read(Buffer.alloc(512), 0), (e: unknown) => e instanceof Qcow2CorruptionError && e.warning === undefined);
    });
  }
});

/** The file offset of the first L2 entry (L1[0] → L2 table). */
function l2At(b: Buffer): number {
  const l1 = Number(b.readBigUInt64BE(40));
  return Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
}

test('read: damaged compressed clusters fail with EIO where qemu-img convert fails', (t) => {
  const dir = tempDir(t);
  for (const type of ['zlib', 'zstd']) {
    const path = join(dir, `${type}.qcow2`);
    qemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', `compression_type=${type}`, path, '1M']);
    qemu('10.0', ['-c', 'write -c -P 0x5a 0 64k', path], 'qemu-io');
    const bytes = readFileSync(path);
    const entry = bytes.readBigUInt64BE(l2At(bytes));
    const host = Number(entry & ((1n << 54n) - 1n));
    bytes.fill(0xff, host, host + 16); // the stream's first bytes
    writeFileSync(path, bytes);
    const r = runQemu('10.0', ['convert', '-O', 'raw', path, join(dir, 'out.raw')]);
    assert.equal(r.status, 1, `${type}: qemu-img convert accepted the damage`);
    assert.match(r.stderr, /Input\/output error/);
    withImage(path, (img) => assert.throws(() => img.read(Buffer.alloc(4096), 0), (e: unknown) => e instanceof ImageError && e.errno === 'EIO'));
  }
});
