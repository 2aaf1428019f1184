// The host's hole punching for `convert -n` (src/host/punch-holes.ts): the range reads as zeros
// and its blocks are freed, the size stays; a target that is also an input, or no regular file,
// is left alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, statSync, writeFileSync, linkSync } from 'node:fs';
import { join } from 'node:path';
import { fdFileId, punchTarget } from '../../src/host/punch-holes.ts';
import { tempDir } from './helpers.ts';

const MiB = 1024 * 1024;

test('punchTarget frees and zeroes [0, length) and keeps the size', () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 't.raw');
    writeFileSync(path, Buffer.alloc(4 * MiB, 0xff));
    const before = statSync(path).blocks;
    const fd = openSync(path, 'r+');
    try {
      assert.equal(punchTarget(fd, 3 * MiB, []), true);
    } finally {
      closeSync(fd);
    }
    const after = statSync(path);
    assert.equal(after.size, 4 * MiB);
    assert.equal(before - after.blocks, (3 * MiB) / 512, 'three MiB of blocks freed');
    const bytes = readFileSync(path);
    assert.ok(bytes.subarray(0, 3 * MiB).every((b) => b === 0));
    assert.ok(bytes.subarray(3 * MiB).every((b) => b === 0xff));
  } finally {
    cleanup();
  }
});

test('punchTarget refuses a target that is one of the inputs (also through a hard link)', () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 'same.raw');
    writeFileSync(path, Buffer.alloc(MiB, 0xaa));
    linkSync(path, join(dir, 'link.raw'));
    const target = openSync(path, 'r+');
    const input = openSync(join(dir, 'link.raw'), 'r');
    try {
      assert.equal(punchTarget(target, MiB, [fdFileId(input)]), false);
    } finally {
      closeSync(target);
      closeSync(input);
    }
    assert.ok(readFileSync(path).every((b) => b === 0xaa), 'untouched');
  } finally {
    cleanup();
  }
});

test('punchTarget refuses what is not a regular file', () => {
  const fd = openSync('/dev/null', 'r+');
  try {
    assert.equal(punchTarget(fd, MiB, []), false);
  } finally {
    closeSync(fd);
  }
});
