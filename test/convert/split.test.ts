// How convert's guests share the copy (ops/convert/split.ts): parts tile the disk, start on 2 MiB
// boundaries, and carry about the same work whatever the layout of the data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { balancedRange, workerRange, PARALLEL_MIN_BYTES, SPLIT_ALIGN } from '../../src/ops/convert/split.ts';
import { ImageError, type Extent, type Image } from '../../src/formats/types.ts';

const MiB = 1024 * 1024;

/** An image made of [length, kind] runs (kind: 'data', 'compressed' or 'zero'). */
function fakeImage(layout: [number, 'data' | 'compressed' | 'zero'][], brokenAt?: number): Image {
  const size = layout.reduce((n, [l]) => n + l, 0);
  return {
    format: 'fake',
    virtualSize: size,
    info: () => ({ format: 'fake', 'virtual-size': size }) as never,
    read: () => {},
    extent(offset: number, length: number): Extent {
      if (brokenAt !== undefined && offset >= brokenAt) throw new ImageError('Input/output error', 'EIO');
      let start = 0;
      for (const [l, kind] of layout) {
        if (offset < start + l) {
          const len = Math.min(length, start + l - offset);
          return { offset, length: len, kind: kind === 'zero' ? 'zero' : 'data', compressed: kind === 'compressed' || undefined, depth: 0 };
        }
        start += l;
      }
      throw new Error('past the end');
    },
  };
}

/** Data bytes of `layout` inside [from, to). */
function dataIn(layout: [number, string][], from: number, to: number, kind = 'data'): number {
  let start = 0;
  let n = 0;
  for (const [l, k] of layout) {
    if (k === kind) n += Math.max(0, Math.min(to, start + l) - Math.max(from, start));
    start += l;
  }
  return n;
}

test('data in the first quarter of the disk is split in half, not the disk', () => {
  const layout: [number, 'data' | 'zero'][] = [[512 * MiB, 'data'], [1536 * MiB, 'zero']];
  const image = fakeImage(layout);
  const a = balancedRange([image], 0, 2);
  const b = balancedRange([image], 1, 2);
  assert.deepEqual([a[0], a[1], b[1]], [0, a[1], 2048 * MiB], 'the parts tile the disk');
  assert.equal(a[1], b[0]);
  assert.equal(a[1] % SPLIT_ALIGN, 0);
  const share = dataIn(layout, a[0], a[1]) / (512 * MiB);
  assert.ok(share > 0.45 && share < 0.55, `guest 0 copies ${share} of the data`);
  // The offset split would have given guest 0 all of it.
  assert.deepEqual(workerRange(2048 * MiB, 0, 2), [0, 1024 * MiB]);
});

test('compressed data weighs more than plain data', () => {
  const layout: [number, 'data' | 'compressed'][] = [[512 * MiB, 'compressed'], [512 * MiB, 'data']];
  const [, split] = balancedRange([fakeImage(layout)], 0, 2);
  assert.ok(split < 512 * MiB, `the split (${split / MiB} MiB) falls inside the compressed part`);
  assert.ok(split > 256 * MiB);
});

test('several sources are weighed as one concatenated disk', () => {
  const images = [fakeImage([[256 * MiB, 'zero']]), fakeImage([[256 * MiB, 'data']])];
  const a = balancedRange(images, 0, 2);
  const b = balancedRange(images, 1, 2);
  assert.equal(a[0], 0);
  assert.equal(b[1], 512 * MiB);
  assert.ok(a[1] > 256 * MiB + 100 * MiB && a[1] < 256 * MiB + 156 * MiB, `split at ${a[1] / MiB} MiB`);
});

test('a small disk goes to guest 0 whole', () => {
  const image = fakeImage([[PARALLEL_MIN_BYTES - MiB, 'data']]);
  assert.deepEqual(balancedRange([image], 0, 2), [0, PARALLEL_MIN_BYTES - MiB]);
  assert.deepEqual(balancedRange([image], 1, 2), [0, 0]);
});

test('a broken extent falls back to the offset split (the copy reports the error)', () => {
  const image = fakeImage([[512 * MiB, 'data'], [1536 * MiB, 'zero']], 512 * MiB);
  assert.deepEqual(balancedRange([image], 0, 2), workerRange(2048 * MiB, 0, 2));
  assert.deepEqual(balancedRange([image], 1, 2), workerRange(2048 * MiB, 1, 2));
});
