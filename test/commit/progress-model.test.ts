// The mirror-operation model behind `commit -p` (src/ops/commit-progress.ts) on disks too big to
// commit in a test: how operations are cut, and that what the guest sends stays bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Extent, ExtentKind, Image } from '../../src/formats/types.ts';
import { commitProgress, mirrorOps } from '../../src/ops/commit-progress.ts';

const MiB = 1024 * 1024;

/** A disk of `size` bytes whose extents are the given runs (the rest unallocated). */
function fakeTop(size: number, runs: { at: number; length: number; kind: ExtentKind }[]): Image {
  const extent = (offset: number, length: number): Extent => {
    const run = runs.find((r) => r.at <= offset && offset < r.at + r.length);
    if (run) return { offset, length: Math.min(length, run.at + run.length - offset), kind: run.kind, depth: 0 };
    const next = Math.min(...runs.filter((r) => r.at > offset).map((r) => r.at), size);
    return { offset, length: Math.min(length, next - offset), kind: 'unallocated', depth: 1 };
  };
  return { format: 'qcow2', virtualSize: size, info: () => ({}) as ReturnType<Image['info']>, read: () => undefined, extent };
}

test('data is copied in operations of 1 MiB at most, zero runs in areas of 16 MiB', () => {
  const top = fakeTop(64 * MiB, [{ at: 0, length: 3 * MiB, kind: 'data' }, { at: 8 * MiB, length: 40 * MiB, kind: 'zero' }]);
  const ops = mirrorOps(top, [[0, 3 * MiB], [8 * MiB, 48 * MiB]], 65536, { clusterSize: 65536, zeroClusters: true });
  assert.deepEqual(ops.map((o) => [o.offset / MiB, o.bytes / MiB, o.method]), [
    [0, 1, 'copy'], [1, 1, 'copy'], [2, 1, 'copy'],
    [8, 16, 'zero'], [24, 16, 'zero'], [40, 8, 'zero'],
  ]);
});

test('a run shorter than a chunk is copied as a whole chunk (zeros too), the last one clipped at the disk end', () => {
  const top = fakeTop(1000 * 1024, [{ at: 0, length: 512, kind: 'zero' }, { at: 512, length: 4096, kind: 'data' }, { at: 960 * 1024, length: 40 * 1024, kind: 'zero' }]);
  const ops = mirrorOps(top, [[0, 65536], [960 * 1024, 1024 * 1024]], 65536, { clusterSize: 65536, zeroClusters: true });
  assert.deepEqual(ops.map((o) => [o.offset, o.bytes, o.method]), [[0, 65536, 'copy'], [960 * 1024, 40 * 1024, 'copy']]);
});

test('zero writes into one L2 table show nothing between 0% and 100%, into several they show each step', () => {
  const target = { clusterSize: 4096, zeroClusters: true }; // an L2 table spans 2 MiB
  const ops = (offsets: number[]) => offsets.map((offset) => ({ offset, bytes: 4096, method: 'zero' as const }));
  assert.deepEqual(commitProgress(ops([0, 64 * 1024, 128 * 1024]), 3 * 4096, target), []);
  assert.deepEqual(commitProgress(ops([0, 2 * MiB, 4 * MiB, 6 * MiB]), 4 * 4096, target), [25, 50, 75]);
  // A raw base (or a compat=0.10 one) writes zeros as data: every operation waits.
  assert.deepEqual(commitProgress(ops([0, 64 * 1024]), 2 * 4096, { zeroClusters: false }), [50]);
});

test('a big copy sends at most about a hundred values, each more than 1% above the last', () => {
  const ops = Array.from({ length: 100000 }, (_, i) => ({ offset: i * MiB, bytes: MiB, method: 'copy' as const }));
  const shown = commitProgress(ops, 100000 * MiB, { clusterSize: 65536, zeroClusters: true });
  assert.ok(shown.length > 50 && shown.length <= 100, `${shown.length} values`);
  shown.forEach((v, i) => assert.ok(v > (i === 0 ? 0 : shown[i - 1]) + 1 && v < 100, `value ${i}: ${v}`));
});
