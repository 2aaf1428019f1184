import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDevice } from '../../src/io/fd-device.ts';

test('MemoryDevice reads short at EOF', () => {
  const dev = new MemoryDevice(new Uint8Array([1, 2, 3]));
  const buf = new Uint8Array(4);
  assert.equal(dev.read(buf, 1), 2);
  assert.deepEqual([...buf], [2, 3, 0, 0]);
  assert.equal(dev.read(buf, 3), 0);
});
