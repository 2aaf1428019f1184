// convert -p where qemu's block-status request limit shows: qemu-img convert asks at most
// BDRV_REQUEST_MAX_SECTORS (INT_MAX >> 9 sectors, 2 GiB - 512 bytes) at once, in 7.2 and 10.0, and
// cuts its 2 MiB progress chunks from the start of each run it gets. A 2.5 GiB hole of a raw file
// copied with -S 0 (zeros count) is runs of 2 GiB - 512 and 512 MiB + 512, so the chunks after
// the first run end 512 bytes off the 2 MiB grid, and one line prints 89.37 where a 1 GiB cap
// prints 89.38. Such disks are copied by two guests: their parts must start at qemu's run starts
// and their chunks be replayed in disk order (split.ts progressShare, open-copy.ts progressSum).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { prng, tempDir } from './helpers.ts';
import { assertSameConvert, sameConvert } from './edge-compare.ts';
import { longTest } from '../helpers/long.ts';

const { dir, cleanup } = tempDir();
const at = (name: string) => join(dir, name);
const MiB = 1024 * 1024;

/** A sparse file of `size` bytes with `pieces` of [offset, length] written with seeded bytes. */
function sparseFile(name: string, size: number, pieces: [number, number][]): void {
  const fd = openSync(at(name), 'w');
  ftruncateSync(fd, size);
  const next = prng(size % 9973);
  for (const [offset, length] of pieces) {
    const buf = Buffer.alloc(length);
    for (let i = 0; i + 4 <= length; i += 4) buf.writeUInt32LE(next(), i);
    writeSync(fd, buf, 0, length, offset);
  }
  closeSync(fd);
}

before(() => {
  sparseFile('hole.raw', 2560 * MiB, []);
  // 600 MiB with 48 data runs of 1 MiB + 4 KiB at odd offsets: split between two guests, whose
  // chunks (2 MiB, cut from each run's start) must be replayed in order.
  sparseFile('scattered.raw', 600 * MiB, Array.from({ length: 48 }, (_, i): [number, number] => [i * 12 * MiB + 4096 * (i % 7 + 1), MiB + 4096]));
});
after(cleanup);

const RAW = ['-f', 'raw', '-O', 'raw'];

describe('convert -p past the 2 GiB block-status limit', () => {
  // Long tier (45 s: both programs write 2.5 GiB of zeros); the odd-offset cases below keep the
  // two-guest progress in the short tier.
  longTest('-S 0, a 2.5 GiB hole: zero runs of 2 GiB - 512, chunks off the grid after it', async () => {
    // Two guests write the zeros at once: ext4 may need an extent-tree block more than qemu's file.
    const { result } = await sameConvert({ dir, args: ['-p', '-S', '0', ...RAW, { source: 'hole.raw' }], blockSlack: 64 });
    // What qemu does, pinned (the comparison above is what instar is held to).
    assert.match(result.stdout, /\(89\.37\/100%\)/);
  });
  // Long tier: each writes or reads 2.5 GiB per program; the first case covers the limit itself.
  // The same two guests writing zeros: the same extent-tree slack (8 blocks more failed once).
  longTest('-S 0 over an existing file (the two rounds)', () => assertSameConvert({ dir, args: ['-p', '-S', '0', ...RAW, { source: 'hole.raw' }], prepare: (t) => writeFileSync(t, 'x'), blockSlack: 64 }));
  longTest('without -S 0 the hole counts nothing', () => assertSameConvert({ dir, args: ['-p', ...RAW, { source: 'hole.raw' }] }));
  test('data runs at odd offsets, two guests', () => assertSameConvert({ dir, args: ['-p', ...RAW, { source: 'scattered.raw' }] }));
  test('data runs at odd offsets, -S 0', () => assertSameConvert({ dir, args: ['-p', '-S', '0', ...RAW, { source: 'scattered.raw' }], blockSlack: 64 }));
});
