// Mutated vdi, qcow, parallels and qed images (seeded byte flips in headers and tables of
// images qemu-img made): opening, info, reads at both ends and a bounded walk of extents may
// only ever fail with ImageError, quickly and in bounded memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryDevice } from '../../../src/io/fd-device.ts';
import { findDriver } from '../../../src/formats/registry.ts';
import { ImageError } from '../../../src/formats/types.ts';
import { qemuOk, tempDir, writeSource } from './legacy-helpers.ts';

/** xorshift32: the same mutants on every run. */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
}

const INTERESTING = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x10];

function exercise(format: string, bytes: Buffer): void {
  const img = findDriver(format)!.open(new MemoryDevice(bytes), { writable: false });
  img.info();
  const size = img.virtualSize;
  const buf = new Uint8Array(Math.min(size, 256 * 1024));
  img.read(buf, 0);
  img.read(buf, size - buf.length);
  for (let at = 0, n = 0; at < size && n < 200; n++) {
    const e = img.extent(at, size - at);
    assert.ok(e.length > 0 && e.offset === at, 'extents advance');
    at += e.length;
  }
}

test('vdi, qcow, parallels, qed: mutants fail only with ImageError, fast and small', () => {
  const { dir, cleanup } = tempDir('legacy-mutants');
  try {
    const src = join(dir, 'src.raw');
    writeSource(src, 1024 * 1024 + 512, 91);
    const seeds: [string, string[]][] = [
      ['vdi', []],
      ['qcow', []],
      ['parallels', ['-o', 'cluster_size=64k']],
      ['qed', ['-o', 'cluster_size=4k,table_size=2']],
    ];
    for (const [format, opts] of seeds) {
      const path = join(dir, `seed.${format}`);
      qemuOk('7.2', ['convert', '-f', 'raw', '-O', format, ...opts, src, path]);
      const seed = readFileSync(path);
      const next = rng(format.length * 7919);
      let failures = 0;
      for (let i = 0; i < 300; i++) {
        const bytes = Buffer.from(seed);
        // Mostly the header and the first tables, where every byte matters.
        const span = Math.min(bytes.length, next(4) === 0 ? bytes.length : 16384);
        for (let k = 1 + next(4); k > 0; k--) bytes[next(span)] = next(2) ? INTERESTING[next(INTERESTING.length)] : next(256);
        const before = process.memoryUsage().arrayBuffers;
        const started = Date.now();
        try {
          exercise(format, bytes);
        } catch (e) {
          assert.ok(e instanceof ImageError, `${format} mutant ${i}: ${String(e)}`);
          failures++;
        }
        assert.ok(Date.now() - started < 2000, `${format} mutant ${i} took too long`);
        assert.ok(process.memoryUsage().arrayBuffers - before < 128 * 1024 * 1024, `${format} mutant ${i} used too much memory`);
      }
      assert.ok(failures > 0 && failures < 300, `${format}: mutants both open and fail (${failures} failed)`);
    }
  } finally {
    cleanup();
  }
});
