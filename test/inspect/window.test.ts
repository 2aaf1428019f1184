// The inspection window: reads served from the prefix and the tail, refused in between; the
// capture's ring buffer keeps exactly the last bytes whatever the chunk sizes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Window, WindowCapture, WindowMiss, TAIL_BYTES, BASE_PREFIX } from '../../src/inspect/window.ts';

const bytes = (n: number, seed = 0) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

test('reads inside the prefix or the tail are served; a read touching the gap is a WindowMiss', () => {
  const file = bytes(1000);
  const w = new Window(file.subarray(0, 100), file.subarray(900), 1000, 100);
  const buf = new Uint8Array(50);
  assert.equal(w.read(buf, 10), 50);
  assert.deepEqual(buf, file.subarray(10, 60));
  assert.equal(w.read(buf, 920), 50);
  assert.deepEqual(buf, file.subarray(920, 970));
  assert.equal(w.read(buf, 980), 20, 'short at the end of the file');
  assert.deepEqual(buf.subarray(0, 20), file.subarray(980, 1000));
  assert.throws(() => w.read(buf, 80), (e) => e instanceof WindowMiss && e.offset === 100);
  assert.throws(() => w.read(buf, 500), WindowMiss);
  assert.throws(() => w.read(new Uint8Array(10), 895), (e) => e instanceof WindowMiss && e.offset === 895);
});

test('a prefix that meets the tail serves everything', () => {
  const file = bytes(300);
  const w = new Window(file.subarray(0, 200), file.subarray(150), 300, 200);
  const buf = new Uint8Array(300);
  assert.equal(w.read(buf, 0), 300);
  assert.deepEqual(buf, file);
});

test('the capture keeps the first bytes it was asked for and exactly the last TAIL_BYTES', () => {
  const file = bytes(3 * TAIL_BYTES + 12345, 3);
  for (const size of [1, 7, 4096, TAIL_BYTES - 1, TAIL_BYTES + 1, 3 * TAIL_BYTES]) {
    const c = new WindowCapture(() => 0);
    for (let at = 0; at < file.length; at += size) c.push(file.subarray(at, at + size));
    const w = c.finish();
    assert.equal(w.size, file.length);
    assert.deepEqual(w.prefix, file.subarray(0, BASE_PREFIX), `chunk ${size}`);
    assert.deepEqual(w.tail, file.subarray(file.length - TAIL_BYTES), `chunk ${size}`);
  }
});

test('the prefix grows as the need function asks, never past the cap', () => {
  const file = bytes(4 * 1024 * 1024);
  const c = new WindowCapture((p) => (p.length < 200_000 ? 200_000 : 1e12), 1024 * 1024);
  c.push(file);
  const w = c.finish();
  assert.equal(w.prefix.length, 1024 * 1024);
  assert.deepEqual(w.prefix, file.subarray(0, 1024 * 1024));
});
