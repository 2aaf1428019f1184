// Mutated dirty-log VHDX images opened writable (the replay of check -r), in memory: only
// ImageError escapes, every write lands in a header sector or inside the file past the header
// section and outside the log, the file never grows, and each case ends quickly.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runQemu } from '../helpers/oracles.ts';
import { vhdxDriver } from '../../src/formats/vhdx/driver.ts';
import { ImageError } from '../../src/formats/types.ts';
import { MemoryDevice } from '../../src/io/fd-device.ts';
import { Rng } from '../fuzz/prng.ts';
import { HEADERS, MiB, view } from '../formats/vhdx/vhdx-bytes.ts';
import { logOffset, sealEntry, writeLogEntry } from './vhdx-log-bytes.ts';

let seed: Uint8Array;

before(() => {
  const dir = mkdtempSync(join(tmpdir(), 'instar-repair-fuzz-'));
  try {
    const path = join(dir, 'base.vhdx');
    assert.equal(runQemu('7.2', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', path, '8M']).status, 0);
    seed = new Uint8Array(readFileSync(path));
    writeLogEntry(seed, { descriptors: 3, sequence: 11n });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

class RecordingDevice extends MemoryDevice {
  writes: [number, number][] = [];
  write(buf: Uint8Array, pos: number): void {
    assert.ok(pos + buf.length <= this.bytes.length, `a write past the end: ${pos}+${buf.length}`);
    this.bytes.set(buf, pos);
    this.writes.push([pos, buf.length]);
  }
}

test('vhdx log replay over mutated logs: ImageError only, writes in bounds, bounded time', () => {
  const rng = new Rng(0x5eed1234);
  const pick = (n: number) => rng.below(n);
  let replayed = 0;
  for (let i = 0; i < 400; i++) {
    const b = seed.slice();
    const log = logOffset(b);
    const logLength = view(b).getUint32(HEADERS[0] + 68, true);
    // Bytes of the entry header, its descriptors and data sectors, sometimes resealed so that the
    // checksum holds and the replay itself meets the damage.
    for (let k = 1 + pick(4); k > 0; k--) {
      const at = log + (rng.chance(0.5) ? pick(256) : pick(5 * 4096));
      b[at] = rng.chance(0.3) ? 0xff : pick(256);
    }
    if (rng.chance(0.7)) sealEntry(b);
    const dev = new RecordingDevice(b);
    const started = Date.now();
    try {
      vhdxDriver.open(dev, { writable: true, displayName: 'x.vhdx' });
      if (dev.writes.length > 0) replayed++;
    } catch (e) {
      assert.ok(e instanceof ImageError, `case ${i}: ${(e as Error).stack}`);
    }
    assert.ok(Date.now() - started < 2000, `case ${i} took too long`);
    for (const [pos, length] of dev.writes) {
      const header = HEADERS.includes(pos) && length === 4096;
      const body = pos >= MiB && !(pos < log + logLength && pos + length > log) && pos + length <= seed.length;
      assert.ok(header || body, `case ${i}: a write at ${pos} (${length} bytes)`);
    }
  }
  assert.ok(replayed > 20, `too few mutants were replayed (${replayed}) for the test to mean much`);
});
