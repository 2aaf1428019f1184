// qed driver against qemu-img 7.2 and 10.0: images converted from a mixed raw file with several
// cluster and table sizes, backing chains (qed over qed, qed over raw) written by qemu-io, zero
// clusters; info, the bytes of `convert -O raw` and `map` compared; hostile headers and tables
// built byte by byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryDevice } from '../../../src/io/fd-device.ts';
import { qedDriver } from '../../../src/formats/qed/driver.ts';
import { ImageError } from '../../../src/formats/types.ts';
import { runQemu } from '../../helpers/oracles.ts';
import {
  assertUnalignedReads, checkAgainstOracles, openChain, oracleOpenError, ourOpenError, qemuOk, tempDir, writeSource,
} from '../qcow/legacy-helpers.ts';

test('qed: images converted from a mixed raw file, several cluster and table sizes', () => {
  const { dir, cleanup } = tempDir('qed');
  try {
    const src = join(dir, 'src.raw');
    writeSource(src, 5 * 1024 * 1024 + 9 * 512, 41);
    for (const opts of ['cluster_size=4k,table_size=2', 'cluster_size=64k', 'cluster_size=1M,table_size=16', 'cluster_size=8k,table_size=1']) {
      const img = join(dir, `${opts.replace(/[,=]/g, '-')}.qed`);
      if (opts.endsWith('table_size=1')) {
        // qemu creates these but cannot open them again (its table offset check).
        qemuOk('7.2', ['create', '-q', '-f', 'qed', '-o', opts, img, '5M']);
        assert.equal(ourOpenError('qed', readFileSync(img), img), oracleOpenError(img, 'qed'));
        continue;
      }
      qemuOk('7.2', ['convert', '-f', 'raw', '-O', 'qed', '-o', opts, src, img]);
      checkAgainstOracles(img, 'qed', dir);
      openChain(img, ['qed'], (image) => assertUnalignedReads(image, 13));
    }
  } finally {
    cleanup();
  }
});

test('qed: backing chains over qed and raw, zero clusters, the need-check flag', () => {
  const { dir, cleanup } = tempDir('qed');
  try {
    const src = join(dir, 'src.raw');
    writeSource(src, 3 * 1024 * 1024, 42);
    const base = join(dir, 'base.qed');
    qemuOk('7.2', ['convert', '-f', 'raw', '-O', 'qed', '-o', 'cluster_size=16k', src, base]);
    const top = join(dir, 'top.qed');
    qemuOk('10.0', ['create', '-q', '-f', 'qed', '-b', 'base.qed', '-F', 'qed', top, '4M']);
    qemuOk('7.2', ['-f', 'qed', '-c', 'write -P 0x5a 1000k 70k', '-c', 'write -z 64k 128k', '-c', 'write -P 0x66 3500k 8k', top], 'qemu-io');
    checkAgainstOracles(top, 'qed', dir, { backing: ['qed'] });

    const over = join(dir, 'over-raw.qed');
    qemuOk('10.0', ['create', '-q', '-f', 'qed', '-o', 'cluster_size=4k', '-b', 'src.raw', '-F', 'raw', over, '5M']);
    qemuOk('7.2', ['-f', 'qed', '-c', 'write -P 0x11 1536k 1M', '-c', 'write -z 4M 8k', over], 'qemu-io');
    checkAgainstOracles(over, 'qed', dir, { backing: ['raw'] });

    // The need-check bit set by hand: not shown as dirty, and read-only opens do not check.
    const dirty = join(dir, 'dirty.qed');
    const bytes = readFileSync(top);
    bytes.writeBigUInt64LE(bytes.readBigUInt64LE(16) | 2n, 16);
    writeFileSync(dirty, bytes);
    checkAgainstOracles(dirty, 'qed', dir, { backing: ['qed'] });
  } finally {
    cleanup();
  }
});

interface Fields {
  clusterSize?: number;
  tableSize?: number;
  headerSize?: number;
  features?: bigint;
  l1Offset?: bigint;
  imageSize?: bigint;
  backingOffset?: number;
  backingSize?: number;
}

/** A QED header (64 bytes) padded to `fileSize` bytes, as qemu lays out a 4 KiB-cluster image. */
function image(f: Fields, fileSize = 3 * 4096): Buffer {
  const b = Buffer.alloc(fileSize);
  b.writeUInt32LE(0x00444551, 0);
  b.writeUInt32LE(f.clusterSize ?? 4096, 4);
  b.writeUInt32LE(f.tableSize ?? 1 * 2, 8);
  b.writeUInt32LE(f.headerSize ?? 1, 12);
  b.writeBigUInt64LE(f.features ?? 0n, 16);
  b.writeBigUInt64LE(f.l1Offset ?? 4096n, 40);
  b.writeBigUInt64LE(f.imageSize ?? 1048576n, 48);
  b.writeUInt32LE(f.backingOffset ?? 0, 56);
  b.writeUInt32LE(f.backingSize ?? 0, 60);
  return b;
}

test('qed: hostile headers fail with qemu wording, fast and small', () => {
  const { dir, cleanup } = tempDir('qed-hostile');
  try {
    const cases: [string, Buffer][] = [
      ['features', image({ features: 0x18n })],
      ['cluster-small', image({ clusterSize: 2048 })],
      ['cluster-odd', image({ clusterSize: 4096 + 512 })],
      ['cluster-huge', image({ clusterSize: 128 * 1024 * 1024 })],
      ['table-size', image({ tableSize: 3 })],
      ['table-size-big', image({ tableSize: 32 })],
      ['image-size-odd', image({ imageSize: 1000n })],
      ['image-size-big', image({ imageSize: 1n << 40n })],
      ['l1-unaligned', image({ l1Offset: 4097n })],
      ['l1-in-header', image({ l1Offset: 0n })],
      ['l1-past-eof', image({ l1Offset: 8192n })],
      ['l1-wraps', image({ l1Offset: (1n << 64n) - 4096n })],
      ['header-size', image({ headerSize: 0x100000 })],
      ['backing-offset', image({ features: 1n, backingOffset: 4000, backingSize: 100 })],
      ['backing-too-long', image({ features: 1n, headerSize: 2, l1Offset: 8192n, backingOffset: 64, backingSize: 4096 }, 4 * 4096)],
      ['truncated', image({}).subarray(0, 40)],
      ['empty-table-size', image({ tableSize: 0 })],
      // 2 MiB clusters, 8-cluster tables: qemu's 64-bit maximum is 2^63, past BDRV_MAX_LENGTH.
      ['size-over-max-length', image({ clusterSize: 2 << 20, tableSize: 8, l1Offset: 2n << 20n, imageSize: (1n << 63n) - 512n }, 10 * (2 << 20))],
    ];
    for (const [name, bytes] of cases) {
      const path = join(dir, `${name}.qed`);
      writeFileSync(path, bytes);
      assert.equal(ourOpenError('qed', bytes, path), oracleOpenError(path, 'qed'), name);
    }
  } finally {
    cleanup();
  }
});

test('qed: bad L2 and data cluster offsets fail reads as qemu does (EINVAL); loops and duplicates read', () => {
  const { dir, cleanup } = tempDir('qed-hostile');
  try {
    // 4 KiB clusters, 2-cluster tables: L1 at 4096, L2 at 12288, data from 20480.
    const base = (): Buffer => {
      const b = image({ imageSize: 64n * 4096n }, 7 * 4096);
      b.fill(0x5c, 20480, 24576);
      b.fill(0x7d, 24576, 28672);
      return b;
    };
    const bad: [string, (b: Buffer) => void][] = [
      ['l2-unaligned', (b) => b.writeBigUInt64LE(12289n, 4096)],
      ['l2-past-eof', (b) => b.writeBigUInt64LE(1n << 40n, 4096)],
      ['data-past-eof', (b) => { b.writeBigUInt64LE(12288n, 4096); b.writeBigUInt64LE(1n << 30n, 12288); }],
      ['data-unaligned', (b) => { b.writeBigUInt64LE(12288n, 4096); b.writeBigUInt64LE(20481n, 12288); }],
    ];
    for (const [name, edit] of bad) {
      const bytes = base();
      edit(bytes);
      const path = join(dir, `${name}.qed`);
      writeFileSync(path, bytes);
      const img = qedDriver.open(new MemoryDevice(bytes), { writable: false });
      assert.throws(() => img.read(new Uint8Array(4096), 0), (e: unknown) => e instanceof ImageError && e.message === 'Invalid argument', name);
      const r = runQemu('10.0', ['convert', '-f', 'qed', '-O', 'raw', path, join(dir, 'out.raw')], { timeoutMs: 20_000 });
      assert.match(r.stderr, /^qemu-img: error while reading (block status at offset|at byte) 0: Invalid argument$/m, name);
    }
    // L2 pointing at the L1 table (a loop), several entries sharing one data cluster, and a run
    // whose later clusters lie past the end of the file (only the first is checked).
    const good: [string, (b: Buffer) => void][] = [
      ['l2-is-l1', (b) => { b.writeBigUInt64LE(4096n, 4096); b.writeBigUInt64LE(20480n, 4104); }],
      ['shared', (b) => { b.writeBigUInt64LE(12288n, 4096); for (let i = 0; i < 5; i++) b.writeBigUInt64LE(20480n, 12288 + 8 * i); }],
      ['run-past-eof', (b) => { b.writeBigUInt64LE(12288n, 4096); for (let i = 0; i < 4; i++) b.writeBigUInt64LE(24576n + 4096n * BigInt(i), 12288 + 8 * i); }],
    ];
    for (const [name, edit] of good) {
      const bytes = base();
      edit(bytes);
      const path = join(dir, `${name}.qed`);
      writeFileSync(path, bytes);
      checkAgainstOracles(path, 'qed', dir);
    }
  } finally {
    cleanup();
  }
});
