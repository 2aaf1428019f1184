// convert from several sources whose sector counts, each a valid int64, overflow int64 together
// (parallels headers with counts past INT64_MAX / 512: each opens, its byte size wrapped). qemu
// sums the counts in int64; when the sum comes out negative its copy loop never runs: no block
// status is asked (which would fail), nothing is copied, and it exits 0, its target made with the
// wrapped size (first block allocated) or, with -n, untouched (no file is smaller than a negative
// total). A sum that wraps back to positive copies, and fails at the first block status.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { parallelsWithSectors, tempDir } from './helpers.ts';
import { assertSameConvert, sameConvert } from './edge-compare.ts';
import { longTest } from '../helpers/long.ts';

const { dir, cleanup } = tempDir();

before(() => {
  parallelsWithSectors(dir, {
    // 2^63 - 2^55 + 8 sectors: positive, wraps to 4 KiB; two of them sum past INT64_MAX.
    'near-max.hds': 2n ** 63n - 2n ** 55n + 8n,
    // 2^62 sectors: wraps to 0 bytes; two sum to exactly 2^63 (INT64_MIN).
    'quarter.hds': 2n ** 62n,
    // 2^62 + 2^55 + 8: wraps to 4 KiB.
    'quarter-plus.hds': 2n ** 62n + 2n ** 55n + 8n,
  });
});
after(cleanup);

const P = ['-f', 'parallels', '-O', 'raw'];
const src = (...names: string[]) => names.map((source) => ({ source }));
const junk = (size: number) => (target: string) => writeFileSync(target, Buffer.alloc(size, 0xa5));

describe('a negative sector total: nothing copied, exit 0', () => {
  test('two near-max sources, a new target of the wrapped size', async () => {
    const { result, left } = await sameConvert({ dir, args: [...P, ...src('near-max.hds', 'near-max.hds')] });
    assert.equal(result.status, 0);
    assert.equal(result.stderr, '');
    assert.match(left, /^8192 bytes, 8 blocks/);
  });
  test('the sum exactly INT64_MIN: an empty target', () => assertSameConvert({ dir, args: [...P, ...src('quarter.hds', 'quarter.hds')] }));
  test('a good source first: its data is not copied either', () => assertSameConvert({ dir, args: [...P, ...src('good.hds', 'near-max.hds', 'near-max.hds')] }));
  // Long tier: two other counts summing negative take the first case's path (the sum alone decides).
  longTest('different counts', () => assertSameConvert({ dir, args: [...P, ...src('quarter-plus.hds', 'quarter.hds')] }));
  test('-p: the opening and closing lines', () => assertSameConvert({ dir, args: ['-p', ...P, ...src('near-max.hds', 'near-max.hds')] }));
  // Long tier: -S 0 -t none copy nothing either; the sum is refused before options matter.
  longTest('-S 0 -t none', () => assertSameConvert({ dir, args: ['-S', '0', '-t', 'none', ...P, ...src('near-max.hds', 'near-max.hds')] }));
  test('over an existing file', () => assertSameConvert({ dir, args: [...P, ...src('near-max.hds', 'near-max.hds')], prepare: junk(100_000) }));
  test('-n into a small target: untouched', () => assertSameConvert({ dir, args: ['-n', ...P, ...src('near-max.hds', 'near-max.hds')], prepare: junk(100) }));
  // Long tier: the -n case above leaves its target untouched the same way (-p, -S 0 and a good source change nothing there).
  longTest('-n -p -S 0 into a target of junk: untouched', () => assertSameConvert({ dir, args: ['-n', '-p', '-S', '0', ...P, ...src('good.hds', 'near-max.hds', 'near-max.hds')], prepare: junk(2_000_000) }));
});

describe('guards: totals that are not negative', () => {
  // Three near-max counts wrap back to positive: the copy runs and its first block status fails.
  test('three near-max sources', () => assertSameConvert({ dir, args: [...P, ...src('near-max.hds', 'near-max.hds', 'near-max.hds')] }));
  test('one near-max source', () => assertSameConvert({ dir, args: [...P, ...src('near-max.hds')] }));
  test('-n, one near-max source: the target is smaller', () => assertSameConvert({ dir, args: ['-n', ...P, ...src('near-max.hds')], prepare: junk(100) }));
});
