// The copy loop's writer: buffers written in the order they were submitted (one write at a time),
// every write finished before drain() returns, and a failed write reported without hanging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FdDevice } from '../../src/io/fd-device.ts';
import { OverlappedWriter } from '../../src/ops/convert/writer.ts';
import { tempDir } from './helpers.ts';

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
    for (let i = 0; i < 3; i++) writer.submit(await writer.buffer(), [[0, SIZE]], 0);
    await assert.rejects(writer.drain(), { code: 'EBADF' });
    await assert.rejects(writer.buffer(), { code: 'EBADF' });
    assert.ok(readFileSync(path).every((b) => b === 0));
  } finally {
    closeSync(fd);
    cleanup();
  }
});
