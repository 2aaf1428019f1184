// Seeded random mutations of small valid VHD and VHDX images: whatever the bytes, opening,
// reading and mapping end normally or in an ImageError, quickly (DESIGN.md §6 invariant).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryDevice } from '../../../src/io/fd-device.ts';
import { ImageError, type Driver } from '../../../src/formats/types.ts';
import { vpcDriver } from '../../../src/formats/vpc/driver.ts';
import { vhdxDriver } from '../../../src/formats/vhdx/driver.ts';
import { fixCrc, HEADERS } from '../vhdx/vhdx-bytes.ts';
import { qemuOk, tempDir } from './image-helpers.ts';

function prng(seed: number): (n: number) => number {
  let state = seed >>> 0 || 1;
  return (n) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
}

function exercise(driver: Driver, bytes: Uint8Array): void {
  try {
    const img = driver.open(new MemoryDevice(bytes), { writable: false, displayName: 'm' });
    img.info();
    const size = Math.min(img.virtualSize, 64 * 1024 * 1024);
    const buf = new Uint8Array(1024 * 1024);
    for (let at = 0; at < size; at += buf.length) img.read(buf.subarray(0, Math.min(buf.length, size - at)), at);
    for (let at = 0, n = 0; at < img.virtualSize && n < 10_000; n++) at += img.extent(at, img.virtualSize - at).length;
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
  }
}

/** Flips bytes in `regions` (offset, length), fixing the CRCs named by `fix` afterwards. */
function campaign(driver: Driver, base: Uint8Array, regions: [number, number][], seed: number, fix?: (b: Uint8Array) => void): void {
  const next = prng(seed);
  for (let round = 0; round < 400; round++) {
    const bytes = base.slice();
    for (let k = 1 + next(4); k > 0; k--) {
      const [start, length] = regions[next(regions.length)];
      const at = start + next(length);
      bytes[at] = next(4) === 0 ? 0xff : next(256);
    }
    fix?.(bytes);
    const started = Date.now();
    assert.doesNotThrow(() => exercise(driver, bytes), `round ${round}`);
    assert.ok(Date.now() - started < 5000, `round ${round} took too long`);
  }
}

test('vpc: random damage to footer, header and table ends in ImageError or a normal read', () => {
  const { dir, cleanup } = tempDir('vpcfuzz');
  try {
    const img = join(dir, 'm.vhd');
    qemuOk('7.2', ['create', '-q', '-f', 'vpc', img, '6M']);
    qemuOk('7.2', ['-f', 'vpc', '-c', 'write -P 5 1M 2M', img], 'qemu-io');
    const base = new Uint8Array(readFileSync(img));
    // Keep the footer checksum right so that damage reaches the code behind it.
    const fixFooter = (b: Uint8Array) => {
      const f = new DataView(b.buffer, b.byteOffset, 512);
      f.setUint32(64, 0);
      let sum = 0;
      for (let i = 0; i < 512; i++) sum += b[i];
      f.setUint32(64, ~sum >>> 0);
    };
    // The fields the driver reads, each as likely to be hit as the others.
    const fields: [number, number][] = [
      [16, 8], [28, 4], [48, 8], [56, 4], [60, 4], // footer: data offset, creator, size, CHS, type
      [512 + 16, 8], [512 + 28, 4], [512 + 32, 4], [512, 8], // dynamic header: table, entries, block size, magic
      [1536, 64], // BAT
    ];
    campaign(vpcDriver, base, fields, 1, fixFooter);
    campaign(vpcDriver, base, [[0, 512], [512, 1024]], 2);
  } finally {
    cleanup();
  }
});

test('vhdx: random damage to headers, region table, metadata and BAT ends in ImageError or a normal read', () => {
  const { dir, cleanup } = tempDir('vhdxfuzz');
  try {
    const img = join(dir, 'm.vhdx');
    qemuOk('7.2', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img, '6M']);
    qemuOk('7.2', ['-f', 'vhdx', '-c', 'write -P 5 1M 2M', img], 'qemu-io');
    const base = new Uint8Array(readFileSync(img));
    const view = new DataView(base.buffer);
    const md = Number(view.getBigUint64(192 * 1024 + 16 + 32 + 16, true));
    const bat = Number(view.getBigUint64(192 * 1024 + 16 + 16, true));
    const fixAll = (b: Uint8Array) => {
      for (const at of HEADERS) fixCrc(b, at, 4096);
      fixCrc(b, 192 * 1024, 64 * 1024);
    };
    const regions: [number, number][] = [
      ...HEADERS.flatMap((h): [number, number][] => [[h, 16], [h + 48, 16], [h + 64, 16]]), // sequence, log GUID, log fields
      [192 * 1024 + 8, 4], [192 * 1024 + 16, 64], // region count and entries
      [md + 8, 4], [md + 32, 160], [md + 64 * 1024, 48], // metadata count, entries, values
      [bat, 64],
    ];
    campaign(vhdxDriver, base, regions, 3, fixAll);
    campaign(vhdxDriver, base, regions, 4);
  } finally {
    cleanup();
  }
});
