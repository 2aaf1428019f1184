// Property: what the VHD and VMDK writers write reads back, through instar's own readers, as
// the guest data they were given, whatever the sizes (sector multiples, not whole blocks or
// grains, empty) and however the data is cut into ascending writes (sub-cluster pieces, whole
// clusters, zeros skipped or written). Seeded, in memory, no oracle: the differential tests
// (vpc.test.ts, vmdk.test.ts) check the layout against qemu; this checks the data on many shapes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findDriver } from '../../src/formats/registry.ts';
import type { BlockDevice } from '../../src/formats/types.ts';
import { prng } from '../helpers/xorshift.ts';
import { optionMap } from './vpc-vmdk-harness.ts';

/** A file in memory that grows as it is written, as a regular file does. */
class GrowingDevice implements BlockDevice {
  private bytes = Buffer.alloc(0);
  get size(): number {
    return this.bytes.length;
  }
  read(buf: Uint8Array, pos: number): number {
    if (pos >= this.bytes.length) return 0;
    const n = Math.min(buf.length, this.bytes.length - pos);
    buf.set(this.bytes.subarray(pos, pos + n));
    return n;
  }
  write(buf: Uint8Array, pos: number): void {
    if (pos + buf.length > this.bytes.length) this.truncate(pos + buf.length);
    this.bytes.set(buf, pos);
  }
  truncate(size: number): void {
    const next = Buffer.alloc(size);
    this.bytes.copy(next, 0, 0, Math.min(size, this.bytes.length));
    this.bytes = next;
  }
}

const SHAPES: [string, string][] = [
  ['vpc', ''], ['vpc', 'subformat=fixed'], ['vpc', 'force_size=on'],
  ['vmdk', ''], ['vmdk', 'subformat=streamOptimized'], ['vmdk', 'subformat=monolithicFlat'],
  ['vmdk', 'subformat=twoGbMaxExtentSparse'], ['vmdk', 'subformat=twoGbMaxExtentFlat'], ['vmdk', 'zeroed_grain=on'],
];

const basename = (p: string) => p.slice(p.lastIndexOf('/') + 1);

test('vpc and vmdk writers: the image reads back as the data written (seeded shapes and write patterns)', () => {
  const next = prng(20261128);
  const below = (n: number) => next() % n;
  for (let round = 0; round < 45; round++) {
    const [format, options] = SHAPES[round % SHAPES.length];
    // Up to ~5 MiB in sectors, some rounds empty or just past a grain or block boundary.
    const sectors = round % 11 === 0 ? 0 : below(3) === 0 ? 4096 * (1 + below(2)) + 1 + below(200) : 1 + below(10240);
    const source = Buffer.alloc(sectors * 512);
    for (let patches = below(12); patches > 0; patches--) {
      const at = below(source.length || 1);
      // Long runs of one byte (zeros among them), or short runs of noise.
      if (below(2) === 0) source.fill(below(3) === 0 ? 0 : 1 + below(255), at, Math.min(source.length, at + 1 + below(300_000)));
      else for (let i = at; i < Math.min(source.length, at + 1 + below(5000)); i++) source[i] = below(256);
    }
    const label = `round ${round}: ${format} -o '${options}', ${sectors} sectors`;
    const driver = findDriver(format)!;
    const plan = driver.create!.plan(optionMap(options), BigInt(source.length), { now: 1_800_000_000, filename: 'img.x', randomBytes: (n) => new Uint8Array(n).fill(7) });
    const layout = driver.create!.layout(plan);
    const place = (l: { length: number; writes: { pos: number; bytes: Uint8Array }[] }) => {
      const dev = new GrowingDevice();
      dev.truncate(l.length);
      for (const w of l.writes) dev.write(w.bytes, w.pos);
      return dev;
    };
    const image = place(layout.image);
    const extents = (layout.extents ?? []).map(place);
    const writer = driver.writer!.open({ image, extents }, plan);
    // Ascending pieces of random sector counts; all-zero pieces mostly skipped, as callers do.
    for (let pos = 0; pos < source.length; ) {
      const unit = below(3) === 0 ? writer.clusterSize : 512 * (1 + below(300));
      const piece = source.subarray(pos, Math.min(source.length, pos + unit));
      if (!piece.equals(Buffer.alloc(piece.length)) || below(4) === 0) writer.write(piece, pos);
      pos += piece.length;
    }
    writer.finish();
    // An empty VMDK or fixed VHD does not open, in qemu either ("Unsupported image type", "Error
    // reading dynamic VHD header"): nothing to read back.
    if (sectors === 0) continue;
    const devices = new Map<string, BlockDevice>(((plan.extentFiles ?? []) as string[]).map((f, i) => [basename(f), extents[i]]));
    const opened = driver.open(image, { writable: false, devices, readsData: true, displayName: 'img.x' });
    assert.ok(opened.virtualSize >= source.length, `${label}: virtual size ${opened.virtualSize}`);
    const back = Buffer.alloc(opened.virtualSize);
    opened.read(back, 0);
    assert.ok(back.subarray(0, source.length).equals(source), `${label}: the data read back differs`);
    assert.ok(back.subarray(source.length).equals(Buffer.alloc(back.length - source.length)), `${label}: the disk past the data is not zeros`);
  }
});
