// The copy loop's writer: buffers written in the order they were submitted (one write at a time),
// every write finished before drain() returns, and a failed write reported without hanging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FdDevice } from '../../src/io/fd-device.ts';
import { OverlappedWriter } from '../../src/ops/convert/writer.ts';
import { prng, tempDir } from './helpers.ts';

const SIZE = 64 * 1024;

test('writes land in submission order: the last buffer written to a place is what the file holds', async () => {
  const { dir, cleanup } = tempDir();
  const path = join(dir, 'out.raw');
  writeFileSync(path, Buffer.alloc(4 * SIZE));
  const fd = openSync(path, 'r+');
  try {
    const writer = new OverlappedWriter(new FdDevice(fd, true), 4, SIZE);
    for (let round = 1; round <= 20; round++) {
      const buf = await writer.buffer();
      buf.fill(round);
      // Two parts, both over the same region every round, the second at a round-dependent place.
      writer.submit(buf, [[0, SIZE / 2], [SIZE / 2, SIZE]], SIZE * (round % 2));
    }
    await writer.drain();
    const bytes = readFileSync(path);
    assert.ok(bytes.subarray(0, SIZE).every((b) => b === 20), 'offset 0: the last even round');
    assert.ok(bytes.subarray(SIZE, 2 * SIZE).every((b) => b === 19), 'offset 64 KiB: the last odd round');
    assert.ok(bytes.subarray(2 * SIZE).every((b) => b === 0), 'nothing else written');
  } finally {
    closeSync(fd);
    cleanup();
  }
});

test('a failed write fails drain() and buffer(), with every queued buffer settled', async () => {
  const { dir, cleanup } = tempDir();
  const path = join(dir, 'read-only.raw');
  writeFileSync(path, Buffer.alloc(SIZE));
  // Read-only fd: the kernel refuses the writes (EBADF).
  const fd = openSync(path, 'r');
  try {
    const dev = Object.assign(new FdDevice(fd, false), { write: () => assert.fail('writes go through the fd, asynchronously') });
    const writer = new OverlappedWriter(dev, 3, SIZE);
    // buffer() lets the event loop run while a write is out, so it may already report the failure.
    let submitted = 0;
    for (let i = 0; i < 3; i++) {
      const buf = await writer.buffer().catch((e: unknown) => e);
      if (!Buffer.isBuffer(buf)) break;
      writer.submit(buf, [[0, SIZE]], 0);
      submitted++;
    }
    assert.ok(submitted >= 1);
    await assert.rejects(writer.drain(), { code: 'EBADF' });
    await assert.rejects(writer.buffer(), { code: 'EBADF' });
    assert.ok(readFileSync(path).every((b) => b === 0));
  } finally {
    closeSync(fd);
    cleanup();
  }
});

test('parts that continue across buffers are written together, each byte where and as submitted', async () => {
  // Seeded rounds of parts that touch (one write), leave gaps, restart elsewhere or overwrite
  // earlier ones; the file must hold what writing them one by one, in order, leaves.
  const { dir, cleanup } = tempDir();
  const path = join(dir, 'out.raw');
  const FILE = 16 * SIZE;
  writeFileSync(path, Buffer.alloc(FILE));
  const expected = Buffer.alloc(FILE);
  const next = prng(20261128);
  const fd = openSync(path, 'r+');
  try {
    const writer = new OverlappedWriter(new FdDevice(fd, true), 4, SIZE);
    let at = 0;
    for (let round = 1; round <= 300; round++) {
      const buf = await writer.buffer();
      for (let i = 0; i < SIZE; i++) buf[i] = (round * 7 + i) & 0xff;
      // Mostly whole buffers continuing the last one (as a data run is copied), else cut parts anywhere.
      const whole = next() % 3 !== 0;
      const parts: [number, number][] = [];
      if (whole) parts.push([0, SIZE]);
      else {
        for (let pos = next() % 512; pos < SIZE; ) {
          const end = Math.min(SIZE, pos + 1 + (next() % 8192));
          parts.push([pos, end]);
          // Adjacent parts (a write of many pieces) or a gap.
          pos = next() % 2 ? end : end + (next() % 4096);
        }
      }
      if (next() % 5 === 0) at = (next() % (FILE / 512 - SIZE / 512)) * 512;
      for (const [s, e] of parts) buf.copy(expected, at + s, s, e);
      writer.submit(buf, parts, at);
      at = at + SIZE <= FILE - SIZE ? at + SIZE : 0;
    }
    await writer.drain();
    assert.ok(readFileSync(path).equals(expected));
  } finally {
    closeSync(fd);
    cleanup();
  }
});

test('more adjacent parts than one write takes are written in several, in order', async () => {
  const { dir, cleanup } = tempDir();
  const path = join(dir, 'out.raw');
  writeFileSync(path, Buffer.alloc(2 * SIZE));
  const fd = openSync(path, 'r+');
  try {
    const writer = new OverlappedWriter(new FdDevice(fd, true), 2, SIZE);
    const buf = await writer.buffer();
    for (let i = 0; i < SIZE; i++) buf[i] = i % 251;
    // 1024 parts of 64 bytes, all adjacent: more than the iovec limit of one pwritev.
    writer.submit(buf, Array.from({ length: SIZE / 64 }, (_, k): [number, number] => [k * 64, (k + 1) * 64]), SIZE);
    await writer.drain();
    const bytes = readFileSync(path);
    assert.ok(bytes.subarray(0, SIZE).every((b) => b === 0));
    assert.ok(bytes.subarray(SIZE).equals(buf));
  } finally {
    closeSync(fd);
    cleanup();
  }
});
