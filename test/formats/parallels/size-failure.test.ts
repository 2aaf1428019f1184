// The parallels driver takes the header's 64-bit sector count as qemu's total_sectors: a byte size
// that wraps to at most BDRV_MAX_LENGTH opens, with the failure qemu's size queries then give
// (Image.sizeFailure), and no I/O goes through. The commands' wording is checked against both
// oracles in test/differential/size-query.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDevice } from '../../../src/io/fd-device.ts';
import { parallelsDriver } from '../../../src/formats/parallels/driver.ts';
import { sizeFromSectorCount } from '../../../src/formats/sector-count.ts';
import { ImageError } from '../../../src/formats/types.ts';
import { strerrorNumber } from '../../../src/strerror-number.ts';

/** A new-magic header with 1 MiB clusters and one BAT entry, padded to 4 KiB. */
function image(sectors: bigint): Buffer {
  const b = Buffer.alloc(4096);
  b.write('WithouFreSpacExt', 0, 'latin1');
  b.writeUInt32LE(2, 16);
  b.writeUInt32LE(2048, 28);
  b.writeUInt32LE(1, 32);
  b.writeBigUInt64LE(sectors, 36);
  return b;
}

test('sector counts: wrapped sizes, the errno of each failing query, refusals', () => {
  assert.deepEqual(sizeFromSectorCount(8n), { bytes: 4096n });
  assert.deepEqual(sizeFromSectorCount(2n ** 55n + 0x2000n), { bytes: 4n * 1024n * 1024n, sizeFailure: { errno: 27, sectors: false, sectorCount: 2n ** 55n + 0x2000n } });
  assert.deepEqual(sizeFromSectorCount(2n ** 55n), { bytes: 0n, sizeFailure: { errno: 27, sectors: false, sectorCount: 2n ** 55n } });
  assert.deepEqual(sizeFromSectorCount(2n ** 63n + 0x2000n), { bytes: 0n, sizeFailure: { errno: -8192, sectors: true } });
  assert.deepEqual(sizeFromSectorCount(0x8000_0000_ffff_ffffn), { bytes: 0n, sizeFailure: { errno: 1, sectors: true } });
  assert.deepEqual(sizeFromSectorCount(0x8000_0001_0000_0000n), { bytes: 0n, sizeFailure: { errno: 0, sectors: true } });
  // The largest count whose bytes fit BDRV_MAX_LENGTH opens without a failure...
  const last = (2n ** 63n - 2n ** 30n) / 512n;
  assert.deepEqual(sizeFromSectorCount(last), { bytes: 2n ** 63n - 2n ** 30n });
  // (the parallels reader then refuses what a JS number cannot hold exactly)
  assert.throws(() => parallelsDriver.open(new MemoryDevice(image(last)), { writable: false }), /too large for this reader/);
  // ...and the wrapped products past BDRV_MAX_LENGTH fail the open as qemu's refresh does.
  for (const sectors of [last + 1n, 2n ** 64n - 1n, 2n ** 54n + 5n]) {
    assert.throws(() => sizeFromSectorCount(sectors), (e: unknown) => e instanceof ImageError && e.message === 'Could not refresh total sector count: File too large', `${sectors}`);
  }
});

test('glibc strerror for any int', () => {
  assert.equal(strerrorNumber(0), 'Success');
  assert.equal(strerrorNumber(27), 'File too large');
  assert.equal(strerrorNumber(41), 'Unknown error 41');
  assert.equal(strerrorNumber(133), 'Memory page has hardware error');
  assert.equal(strerrorNumber(134), 'Unknown error 134');
  assert.equal(strerrorNumber(-8192), 'Unknown error -8192');
});

test('an image whose size query fails opens, but reads and block status fail with that errno', () => {
  for (const [sectors, text] of [[2n ** 55n + 0x2000n, 'File too large'], [2n ** 63n + 0x2000n, 'Unknown error -8192']] as const) {
    const img = parallelsDriver.open(new MemoryDevice(image(sectors)), { writable: false });
    assert.ok(img.sizeFailure, `${sectors}`);
    assert.throws(() => img.extent(0, 512), (e: unknown) => e instanceof ImageError && e.message === text);
    assert.throws(() => img.read(Buffer.alloc(512), 0), (e: unknown) => e instanceof ImageError && e.message === text);
  }
  const ok = parallelsDriver.open(new MemoryDevice(image(2048n)), { writable: false });
  assert.equal(ok.sizeFailure, undefined);
  assert.equal(ok.virtualSize, 1024 * 1024);
});
