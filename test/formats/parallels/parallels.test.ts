// parallels driver against qemu-img 7.2 and 10.0: images converted from a mixed raw file with
// several cluster sizes and written by qemu-io; info, the bytes of `convert -O raw` and `map`
// compared; hostile headers and BATs built byte by byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryDevice } from '../../../src/io/fd-device.ts';
import { parallelsDriver } from '../../../src/formats/parallels/driver.ts';
import { ImageError } from '../../../src/formats/types.ts';
import {
  assertUnalignedReads, checkAgainstOracles, openChain, oracleOpenError, ourOpenError, qemuOk, tempDir, writeSource,
} from '../qcow/legacy-helpers.ts';

test('parallels: images converted from a mixed raw file, several cluster sizes', () => {
  const { dir, cleanup } = tempDir('parallels');
  try {
    const src = join(dir, 'src.raw');
    writeSource(src, 4 * 1024 * 1024 + 7 * 512, 31);
    for (const cluster of ['4k', '64k', '1M', '1536k']) {
      const img = join(dir, `c${cluster}.hds`);
      qemuOk('7.2', ['convert', '-f', 'raw', '-O', 'parallels', '-o', `cluster_size=${cluster}`, src, img]);
      checkAgainstOracles(img, 'parallels', dir);
      openChain(img, ['parallels'], (image) => assertUnalignedReads(image, 9));
    }
  } finally {
    cleanup();
  }
});

test('parallels: qemu-io writes into created images', () => {
  const { dir, cleanup } = tempDir('parallels');
  try {
    for (const [i, size] of ['9M', '100000000'].entries()) {
      const img = join(dir, `w${i}.hds`);
      qemuOk('10.0', ['create', '-q', '-f', 'parallels', img, size]);
      qemuOk('7.2', ['-f', 'parallels', '-c', 'write -P 0x5a 3M 70k', '-c', 'write -P 0x33 1023k 2k', '-c', 'write -P 0x44 0 512', img], 'qemu-io');
      checkAgainstOracles(img, 'parallels', dir);
    }
  } finally {
    cleanup();
  }
});

interface Fields {
  magic?: string;
  version?: number;
  tracks?: number;
  batEntries?: number;
  sectors?: bigint;
  inuse?: number;
  dataOff?: number;
  extOff?: bigint;
}

/** A Parallels header (64 bytes), then the BAT and `tail`. */
function image(f: Fields, bat: number[] = [], tail = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(64);
  h.write(f.magic ?? 'WithouFreSpacExt', 0, 'latin1');
  h.writeUInt32LE(f.version ?? 2, 16);
  h.writeUInt32LE(16, 20);
  h.writeUInt32LE(f.tracks ?? 8, 28);
  h.writeUInt32LE(f.batEntries ?? bat.length, 32);
  h.writeBigUInt64LE(f.sectors ?? BigInt((f.tracks ?? 8) * bat.length), 36);
  h.writeUInt32LE(f.inuse ?? 0, 44);
  h.writeUInt32LE(f.dataOff ?? 0, 48);
  h.writeBigUInt64LE(f.extOff ?? 0n, 56);
  const b = Buffer.alloc(bat.length * 4);
  bat.forEach((e, i) => b.writeUInt32LE(e, i * 4));
  return Buffer.concat([h, b, tail]);
}

test('parallels: hostile headers fail with qemu wording, fast and small', () => {
  const { dir, cleanup } = tempDir('parallels-hostile');
  try {
    const cases: [string, Buffer][] = [
      ['version', image({ version: 3 }, [0])],
      ['magic', image({ magic: 'WithoutFreeSpacX', version: 2 }, [0])],
      ['zero-tracks', image({ tracks: 0 }, [0])],
      ['big-cluster', image({ tracks: Math.floor(0x7fffffff / 513) + 1 }, [0])],
      ['catalog', image({ batEntries: 0x20000000 }, [0])],
      ['bat-over-request-max', image({ batEntries: 0x1fffffff, sectors: 8n }, [0])],
      ['ext-magic', image({ extOff: 1n << 40n }, [0])],
      ['size-wraps-negative', image({ sectors: 1n << 54n }, [0])],
      ['size-wraps-negative-2', image({ sectors: (1n << 63n) / 512n + 5n }, [0])],
      ['size-over-max-length', image({ sectors: (1n << 54n) - 1n }, [0])],
    ];
    for (const [name, bytes] of cases) {
      const path = join(dir, `${name}.hds`);
      writeFileSync(path, bytes);
      assert.equal(ourOpenError('parallels', bytes, path), oracleOpenError(path, 'parallels'), name);
    }
  } finally {
    cleanup();
  }
});

test('parallels: a size qemu opens but a JS number cannot hold exactly is refused with a clear ImageError', () => {
  // 2^53 + 512 bytes, and the fuzzer's 239132783929196540: within BDRV_MAX_LENGTH (qemu opens
  // them), not exact as numbers. The largest exact size of whole sectors still opens.
  for (const sectors of [2n ** 44n + 1n, 239132783929196540n / 512n]) {
    const bytes = image({ sectors }, [0]);
    assert.throws(() => parallelsDriver.open(new MemoryDevice(bytes), { writable: false }),
      (e: unknown) => e instanceof ImageError && e.message === 'Image size is too large for this reader', `${sectors}`);
  }
  const largest = BigInt(Math.floor(Number.MAX_SAFE_INTEGER / 512));
  const img = parallelsDriver.open(new MemoryDevice(image({ sectors: largest }, [0])), { writable: false });
  assert.equal(img.virtualSize, Number(largest) * 512);
  assert.ok(Number.isSafeInteger(img.virtualSize));
});

test('parallels: BAT entries past the end of the file, duplicated, an unclean image, a truncated header: read like qemu', () => {
  const { dir, cleanup } = tempDir('parallels-hostile');
  try {
    // Clusters of 8 sectors (4 KiB); data from 4 KiB. Entry units are clusters (new magic).
    const data = Buffer.alloc(8192);
    data.fill(0xab, 0, 4096);
    data.fill(0xcd, 4096);
    const cases: [string, Buffer][] = [
      ['past-eof', image({}, [1, 1000, 0, 2], Buffer.concat([Buffer.alloc(4096 - 64 - 16), data]))],
      ['duplicates', image({ inuse: 0x746f6e59 }, [2, 2, 1, 1], Buffer.concat([Buffer.alloc(4096 - 64 - 16), data]))],
      // qemu reads a short header as zero-filled: this one is an empty disk.
      ['truncated', image({}, [1]).subarray(0, 30)],
      ['old-magic', image({ magic: 'WithoutFreeSpace', sectors: 0x1_0000_0020n }, [8, 16, 0, 8], Buffer.concat([Buffer.alloc(4096 - 64 - 16), data]))],
    ];
    for (const [name, bytes] of cases) {
      const path = join(dir, `${name}.hds`);
      writeFileSync(path, bytes);
      checkAgainstOracles(path, 'parallels', dir);
    }
  } finally {
    cleanup();
  }
});

test('parallels: the largest BAT qemu accepts, far past the end of the file, opens in bounded memory', () => {
  const bytes = image({ batEntries: 0x1fff0000, sectors: 8n * 0x1fff0000n }, []);
  const before = process.memoryUsage().arrayBuffers;
  const started = Date.now();
  const img = parallelsDriver.open(new MemoryDevice(bytes), { writable: false });
  const e = img.extent(0, img.virtualSize);
  assert.equal(e.kind, 'unallocated');
  const buf = new Uint8Array(1 << 20).fill(1);
  img.read(buf, img.virtualSize - buf.length);
  assert.ok(buf.every((b) => b === 0));
  assert.ok(Date.now() - started < 3000);
  assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024);
});
