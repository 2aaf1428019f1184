// A guest that names freed ranges in a file it may not write (its read-only input): the op fails
// with one clean line and nothing is punched (the sandboxed guest: only it runs test ops).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { expectRefused, runHostile, scratchDir, writeInput } from '../sandbox/helpers.ts';

test('a freed range in a read-only input is refused, the file untouched', async () => {
  const { dir, cleanup } = scratchDir();
  try {
    const input = writeInput(dir, 'in.raw', Buffer.alloc(65536, 0xaa));
    const message = await expectRefused(runHostile('auto', 'free-input', input));
    assert.match(message, /^the guest named freed ranges that are not valid \(not a writable device\)$/);
    assert.ok(readFileSync(input).every((b) => b === 0xaa), 'nothing punched');
  } finally {
    cleanup();
  }
});
