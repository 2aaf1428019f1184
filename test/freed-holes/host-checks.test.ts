// The host's side of freed ranges (src/host/freed-ranges.ts): a guest's `freed` message is
// untrusted. Valid ranges are punched (zeros, blocks freed, size kept), piece by piece where
// qemu's requests are smaller than a file block; a read-only device, an unaligned, unsorted,
// overlapping or repeated range list, a unit that is no cluster size, or a range past the file's
// end fails the op with nothing punched; the message shape is checked before any of that.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FreedRanges } from '../../src/host/freed-ranges.ts';
import { parseGuestMessage } from '../../src/host/sandbox/guest-messages.ts';
import { MAX_DISCARD_RANGES } from '../../src/io/discard-set.ts';

const MiB = 1024 * 1024;

/** A 4 MiB file of 0xaa, open read-write, handed to `fn` with a second, read-only one. */
function withFiles(fn: (rw: number, ro: number, path: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'instar-freed-'));
  const path = join(dir, 'f');
  writeFileSync(path, Buffer.alloc(4 * MiB, 0xaa));
  writeFileSync(join(dir, 'r'), Buffer.alloc(MiB, 0xbb));
  const rw = openSync(path, 'r+');
  const ro = openSync(join(dir, 'r'), 'r');
  try {
    fn(rw, ro, path);
  } finally {
    closeSync(rw);
    closeSync(ro);
    rmSync(dir, { recursive: true, force: true });
  }
}

test('freed ranges: valid ones are punched, the size kept', () => {
  withFiles((rw, ro, path) => {
    const before = statSync(path).blocks;
    const freed = new FreedRanges([{ fd: rw, writable: true }, { fd: ro, writable: false }]);
    freed.add(0, [[0, 65536, 0], [MiB, 2 * MiB, 65536]]);
    assert.equal(freed.punch(), undefined);
    const bytes = readFileSync(path);
    assert.equal(bytes.length, 4 * MiB);
    assert.ok(bytes.subarray(0, 65536).every((b) => b === 0) && bytes.subarray(MiB, 3 * MiB).every((b) => b === 0));
    assert.ok(bytes.subarray(65536, MiB).every((b) => b === 0xaa) && bytes.subarray(3 * MiB).every((b) => b === 0xaa));
    assert.equal(before - statSync(path).blocks, (65536 + 2 * MiB) / 512, 'the blocks are freed');
  });
});

test('freed ranges: a unit below the file system block punches each piece alone, freeing no block', () => {
  withFiles((rw, _ro, path) => {
    const blksize = Number(statSync(path).blksize);
    assert.ok(blksize >= 1024, 'blocks larger than 512 bytes here');
    const before = statSync(path).blocks;
    const freed = new FreedRanges([{ fd: rw, writable: true }]);
    // One block in 512-byte requests (zeroed, kept), the next in one request (freed).
    freed.add(0, [[0, blksize, 512], [MiB, blksize, 0]]);
    assert.equal(freed.punch(), undefined);
    const bytes = readFileSync(path);
    assert.ok(bytes.subarray(0, blksize).every((b) => b === 0) && bytes.subarray(MiB, MiB + blksize).every((b) => b === 0));
    assert.equal(before - statSync(path).blocks, blksize / 512, 'only the block punched in one request is freed');
  });
});

test('freed ranges: anything malformed fails the op and punches nothing', () => {
  const bad: [string, number, [number, number, number][]][] = [
    ['a read-only device', 1, [[0, 512, 0]]],
    ['no such device', 7, [[0, 512, 0]]],
    ['unaligned', 0, [[100, 512, 0]]],
    ['unaligned length', 0, [[0, 100, 0]]],
    ['unsorted', 0, [[MiB, 512, 0], [0, 512, 0]]],
    ['overlapping', 0, [[0, 1024, 0], [512, 512, 0]]],
    ['empty', 0, [[0, 0, 0]]],
    ['a unit that is no cluster size', 0, [[0, 4096, 1000]]],
    ['a unit too large', 0, [[0, 4096, 4 * MiB]]],
    ['past the end', 0, [[0, 512, 0], [4 * MiB, 512, 0]]],
  ];
  for (const [label, device, ranges] of bad) {
    withFiles((rw, ro, path) => {
      const freed = new FreedRanges([{ fd: rw, writable: true }, { fd: ro, writable: false }]);
      freed.add(0, device === 0 ? [] : [[0, 512, 0]]);
      freed.add(device, ranges);
      assert.match(freed.punch() ?? '', /^the guest named freed ranges (that are not valid|past the end)/, label);
      assert.ok(readFileSync(path).every((b) => b === 0xaa), `${label}: nothing punched`);
    });
  }
  withFiles((rw) => {
    const freed = new FreedRanges([{ fd: rw, writable: true }]);
    freed.add(0, [[0, 512, 0]]);
    freed.add(0, [[512, 512, 0]]);
    assert.match(freed.punch() ?? '', /a device named twice/);
  });
});

test('freed message: the shape is checked before use', () => {
  const ok = parseGuestMessage(JSON.stringify({ type: 'freed', device: 0, ranges: [[0, 512, 0]] }));
  assert.deepEqual(ok, { type: 'freed', device: 0, ranges: [[0, 512, 0]] });
  const bad = [
    { type: 'freed', device: -1, ranges: [] },
    { type: 'freed', device: 0, ranges: [[0, -512, 0]] },
    { type: 'freed', device: 0, ranges: [[0, 512]] },
    { type: 'freed', device: 0, ranges: [[0, 512, 0, 3]] },
    { type: 'freed', device: 0, ranges: [[0, 1.5, 0]] },
    { type: 'freed', device: 0, ranges: 'all' },
    { type: 'freed', device: 0, ranges: [], extra: 1 },
    { type: 'freed', device: 0, ranges: Array.from({ length: MAX_DISCARD_RANGES + 1 }, (_, i) => [i * 1024, 512, 0]) },
  ];
  for (const msg of bad) assert.equal(typeof parseGuestMessage(JSON.stringify(msg)), 'string', JSON.stringify(msg).slice(0, 80));
});
