// The striped share of convert's copy guests (ops/convert/split.ts stripedRanges) and the order the
// host reports their failures in (host/convert/open-copy.ts inDiskOrder): the guests' stripes
// must cover the disk exactly once, each guest's in disk order, whatever the size and guest count;
// and of several failed guests, the one whose failure lies first on the disk is reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PARALLEL_MIN_BYTES, SPLIT_ALIGN, STRIPE_MIN, stripeLength, stripedRanges } from '../../src/ops/convert/split.ts';
import { inDiskOrder } from '../../src/host/convert/open-copy.ts';
import { OpError } from '../../src/host/sandbox/run.ts';
import { prng } from './helpers.ts';

const MiB = 1024 * 1024;

/** Asserts that the guests' stripes tile [0, total) once, each guest's ascending and aligned. */
function assertTiles(total: number, workers: number): void {
  const all: [number, number][] = [];
  for (let w = 0; w < workers; w++) {
    const mine = stripedRanges(total, w, workers);
    for (let i = 0; i < mine.length; i++) {
      const [start, end] = mine[i];
      assert.ok(start < end, `guest ${w}: empty stripe at ${start}`);
      assert.equal(start % SPLIT_ALIGN, 0, `guest ${w}: stripe at ${start} is aligned`);
      if (i > 0) assert.ok(start > mine[i - 1][0], `guest ${w}: stripes in disk order`);
    }
    all.push(...mine);
  }
  all.sort((a, b) => a[0] - b[0]);
  let at = 0;
  for (const [start, end] of all) {
    assert.equal(start, at, `total ${total}, ${workers} guests: no gap or overlap at ${at}`);
    at = end;
  }
  assert.equal(at, total, `total ${total}, ${workers} guests: the stripes reach the end`);
}

test('the stripes of 1 to 4 guests tile disks of many sizes exactly once', () => {
  const next = prng(69);
  const sizes = [0, 512, PARALLEL_MIN_BYTES - 512, PARALLEL_MIN_BYTES, PARALLEL_MIN_BYTES + 512, 2048 * MiB, 2048 * MiB + 4096 * 3 + 512];
  for (let i = 0; i < 40; i++) sizes.push(PARALLEL_MIN_BYTES + (next() % 4096) * MiB + (next() % 8192) * 512);
  for (const total of sizes) for (let workers = 1; workers <= 4; workers++) assertTiles(total, workers);
});

test('guests alternate stripe by stripe: data bunched anywhere lands on both', () => {
  const total = 2048 * MiB;
  const stripe = stripeLength(total);
  assert.equal(stripe, STRIPE_MIN);
  const [a, b] = [stripedRanges(total, 0, 2), stripedRanges(total, 1, 2)];
  assert.equal(a.length, b.length);
  // The first tenth of the disk (data only there: the weighed share's case) is shared evenly.
  const inFront = (ranges: [number, number][]) => ranges.filter(([s]) => s < total / 10).length;
  assert.ok(Math.abs(inFront(a) - inFront(b)) <= 1, `${inFront(a)} and ${inFront(b)} stripes of the first tenth`);
  assert.deepEqual(a[0], [0, stripe]);
  assert.deepEqual(b[0], [stripe, 2 * stripe]);
});

test('a disk below the parallel size goes to guest 0 whole; a guest beyond the count gets nothing', () => {
  assert.deepEqual(stripedRanges(PARALLEL_MIN_BYTES - MiB, 0, 2), [[0, PARALLEL_MIN_BYTES - MiB]]);
  assert.deepEqual(stripedRanges(PARALLEL_MIN_BYTES - MiB, 1, 2), []);
  assert.deepEqual(stripedRanges(PARALLEL_MIN_BYTES, 2, 2), []);
});

test('a huge disk is cut into at most 2^16 stripes, computed at once', () => {
  const total = Number.MAX_SAFE_INTEGER - 511;
  const started = process.hrtime.bigint();
  const [a, b] = [stripedRanges(total, 0, 2), stripedRanges(total, 1, 2)];
  assert.ok(a.length + b.length <= 1 << 16, `${a.length + b.length} stripes`);
  assert.ok(Number(process.hrtime.bigint() - started) / 1e6 < 1000, 'within a second');
  assert.equal(stripeLength(total) % SPLIT_ALIGN, 0);
  assert.equal(Math.max(a.at(-1)![1], b.at(-1)![1]), total);
});

const failed = (message: string): PromiseRejectedResult => ({ status: 'rejected', reason: new OpError(message) });
const done: PromiseFulfilledResult<unknown> = { status: 'fulfilled', value: { sizes: [1] } };
const messages = (outcomes: PromiseSettledResult<unknown>[]) => outcomes.map((o) => (o.status === 'rejected' ? (o.reason as Error).message : 'ok'));

test('failures are reported in disk order, whichever guest met them', () => {
  // Guest 0 failed in its third stripe, guest 1 in its first (lower on the disk).
  const late = failed('error while reading at byte 50331648: Input/output error');
  const early = failed('error while reading at byte 10485760: Input/output error');
  assert.deepEqual(messages(inDiskOrder([late, early])), messages([early, late]));
  assert.deepEqual(messages(inDiskOrder([early, late])), messages([early, late]));
  const status = [failed('error while reading block status at offset 314572800: File too large'), failed('error while reading block status at offset 8388608: File too large')];
  assert.deepEqual(messages(inDiskOrder(status)), messages([status[1], status[0]]));
});

test('outcomes that name no offset keep their places, in guest order', () => {
  const died = failed('guest process killed: time limit exceeded (1 s)');
  const late = failed('error while reading at byte 50331648: Input/output error');
  const early = failed('error while reading at byte 10485760: Input/output error');
  assert.deepEqual(messages(inDiskOrder([died, late, early])), messages([died, early, late]));
  assert.deepEqual(messages(inDiskOrder([late, done, early])), messages([early, done, late]));
  assert.deepEqual(messages(inDiskOrder([done, died])), messages([done, died]));
});
