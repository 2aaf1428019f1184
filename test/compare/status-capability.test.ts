// compare's block-status view asks each image how qemu's driver answers (Image.blockStatus), so
// no op code switches on format names (DESIGN.md §2); the differential compare tests prove the
// output stayed the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers/oracles.ts';
import { statusView } from '../../src/ops/compare-status.ts';
import type { Extent, Image } from '../../src/formats/types.ts';

test('compare-status.ts names no format', () => {
  const code = readFileSync(join(ROOT, 'src/ops/compare-status.ts'), 'utf8').replace(/\/\/.*$/gm, '');
  assert.doesNotMatch(code, /'(raw|qcow2|vmdk|vhdx|vpc|vdi|qed|qcow|parallels|dmg|bochs|cloop|luks)'/);
});

function fakeImage(blockStatus: Image['blockStatus']): Image & { asked: number[] } {
  const asked: number[] = [];
  return {
    format: 'x', virtualSize: 1 << 20, blockStatus, asked,
    info: () => ({ format: 'x', 'virtual-size': 1 << 20 }),
    read: () => {},
    extent: (offset: number, length: number): Extent => {
      asked.push(offset);
      return { offset, length, kind: 'zero', depth: 0 };
    },
  };
}

test('a granule cuts answers at its multiples; none makes everything unmapped data', () => {
  const grained = fakeImage(65536);
  const view = statusView(grained);
  assert.equal(view(1000, 1 << 20).length, 65536 - 1000);
  const none = statusView(fakeImage('none'))(0, 4096);
  assert.deepEqual(none, { offset: 0, length: 4096, kind: 'data', depth: 0 });
  assert.equal(statusView(fakeImage(undefined))(0, 1 << 20).length, 1 << 20);
});
