// The guest's set of freed ranges (src/io/discard-set.ts), against a byte model: after any mix of
// discards, writes, truncates and reads, the file with the final set punched (zeros) holds what
// writing zeros at each discard would have left, reads meanwhile see those bytes, and the set is
// sorted, disjoint, 512-aligned and free of everything written after its discard.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DISCARD_ALIGNMENT, DiscardSet, MAX_DISCARD_RANGES } from '../../src/io/discard-set.ts';
import { prng } from '../helpers/xorshift.ts';

/** A file in memory under a DiscardSet, beside a model that writes zeros at once. */
class Pair {
  file = new Uint8Array(0);
  model = new Uint8Array(0);
  readonly set = new DiscardSet((pos, length) => this.file.fill(0, pos, pos + length));

  private grow(end: number): void {
    if (end <= this.file.length) return;
    const f = new Uint8Array(end);
    f.set(this.file);
    this.file = f;
    const m = new Uint8Array(end);
    m.set(this.model);
    this.model = m;
  }

  write(pos: number, length: number, value: number): void {
    this.grow(pos + length);
    this.set.remove(pos, length);
    this.file.fill(value, pos, pos + length);
    this.model.fill(value, pos, pos + length);
  }

  discard(pos: number, length: number): void {
    const end = Math.min(pos + length, this.file.length);
    if (end <= pos) return;
    this.set.add(pos, end - pos);
    this.model.fill(0, pos, end);
  }

  truncate(size: number): void {
    this.set.clip(size);
    const f = new Uint8Array(size);
    f.set(this.file.subarray(0, size));
    this.file = f;
    const m = new Uint8Array(size);
    m.set(this.model.subarray(0, size));
    this.model = m;
  }

  read(pos: number, length: number): Uint8Array {
    const buf = this.file.slice(pos, pos + length);
    this.set.maskRead(buf, pos);
    return buf;
  }

  /** The file once the host punched the final set. */
  punched(): Uint8Array {
    const out = this.file.slice();
    let end = 0;
    for (const [pos, length] of this.set.ranges()) {
      assert.ok(pos >= end && length > 0, 'sorted, disjoint, not empty');
      assert.equal(pos % DISCARD_ALIGNMENT, 0);
      assert.equal(length % DISCARD_ALIGNMENT, 0);
      assert.ok(pos + length <= out.length, 'inside the file');
      out.fill(0, pos, pos + length);
      end = pos + length;
    }
    return out;
  }
}

test('discard set: random discards, writes, truncates and reads match writing zeros at once', () => {
  const next = prng(0x5eed);
  const pick = (n: number) => next() % n;
  for (let round = 0; round < 200; round++) {
    const p = new Pair();
    p.write(0, 64 * 1024, 0x11);
    for (let step = 0; step < 40; step++) {
      const size = p.file.length;
      // Cluster-sized and odd-sized ranges alike (a write may cut a freed range anywhere).
      const unit = [1, 512, 4096][pick(3)];
      const pos = pick(Math.ceil(size / unit) + 2) * unit;
      const length = (1 + pick(8)) * unit + (unit === 1 ? pick(700) : 0);
      const what = pick(10);
      if (what < 4) p.discard(pos, length);
      else if (what < 8) p.write(pos, length, 1 + pick(255));
      else if (what < 9) p.truncate(pick(size + 8192));
      else assert.deepEqual(p.read(pos, length), p.model.slice(pos, pos + length), 'a read sees zeros where freed');
    }
    assert.deepEqual(p.punched(), p.model, `round ${round}`);
  }
});

test('discard set: adjoining discards merge; a write in the middle splits; a truncate cuts', () => {
  const p = new Pair();
  p.write(0, 1 << 20, 0xaa);
  p.discard(65536, 65536);
  p.discard(131072, 65536);
  p.discard(0, 65536);
  assert.deepEqual(p.set.ranges(), [[0, 196608, 0]]);
  p.write(70000, 100, 0x55);
  // The write's unaligned edges are zeroed at once; the aligned rest stays to be punched.
  assert.deepEqual(p.set.ranges(), [[0, 69632, 0], [70144, 126464, 0]]);
  p.truncate(100000);
  assert.deepEqual(p.set.ranges(), [[0, 69632, 0], [70144, 29696, 0]]);
  assert.deepEqual(p.punched(), p.model);
});

test('discard set: past MAX_DISCARD_RANGES ranges, a new one is written as zeros instead', () => {
  const p = new Pair();
  const count = MAX_DISCARD_RANGES + 10;
  p.write(0, count * 1024, 0x33);
  for (let i = 0; i < count; i++) p.discard(i * 1024, 512);
  assert.equal(p.set.count, MAX_DISCARD_RANGES);
  assert.deepEqual(p.punched(), p.model);
  p.set.settle();
  assert.equal(p.set.count, 0);
  assert.deepEqual(p.file, p.model, 'settled: zeros written over the whole set');
});

test('discard set: units (qemu request sizes) merge alike, stay apart when they differ, the finer wins an overlap', () => {
  const p = new Pair();
  p.write(0, 1 << 20, 0xaa);
  p.set.add(0, 4096, 512);
  p.set.add(4096, 4096, 512);
  p.set.add(8192, 4096);
  p.set.add(12288, 4096);
  assert.deepEqual(p.set.ranges(), [[0, 8192, 512], [8192, 8192, 0]], 'adjoining runs merge only with their own unit');
  p.set.add(6144, 4096, 1024);
  assert.deepEqual(p.set.ranges(), [[0, 16384, 512]], 'an overlap joins them, in the finer unit');
  p.write(1024, 512, 0x55);
  assert.deepEqual(p.set.ranges(), [[0, 1024, 512], [1536, 14848, 512]], 'a cut run keeps its unit');
});
