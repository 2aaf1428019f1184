// The writer's share of the seeded fuzz run in `npm test`: fuzz mutants (the in-process
// campaign's) converted to raw in-process, one or several guests per conversion, with the
// invariants of writer-invariants.ts; plus hand-made cases that pin each check down.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { buildSeeds, type Seed } from './seeds.ts';
import { buildCase } from './campaign.ts';
import { Rng, caseSeed } from './prng.ts';
import { checkWriter, pickWriterCase, RecordingDevice, type WriterOutcome } from './writer-invariants.ts';
import { LONG } from '../helpers/long.ts';

const CAMPAIGN = 20261127;
const MAX_MS = 15_000;
const MIN_CASES = 300;
// Short tier: the campaign's first 600 cases at most (CI ran ~1500 in its 15 s; the mutants come
// from every seed in turn, so the first ones already take in each driver); long tier up to 3000.
const MAX_CASES = LONG ? 3000 : 600;

let seeds: Seed[] = [];
before(async () => {
  seeds = await buildSeeds();
});

test('convert -O raw on fuzz mutants: output = source, writes in bounds, no overlap, -S honoured', async (t) => {
  const started = performance.now();
  const counts = { ok: 0, failedCleanly: 0, skipped: 0, writes: 0 };
  const failures: string[] = [];
  let index = 0;
  // At least MIN_CASES (the same ones every run), more while time is left.
  for (; index < MIN_CASES || (index < MAX_CASES && performance.now() - started < MAX_MS); index++) {
    const rng = new Rng(caseSeed(CAMPAIGN ^ 0x1b873593, index));
    const { input } = buildCase(seeds, CAMPAIGN, index);
    const sources = [{ bytes: input.bytes, format: input.driver }];
    // Some conversions concatenate two sources (convert's several inputs).
    if (rng.chance(0.15)) sources.push({ bytes: buildCase(seeds, CAMPAIGN, index + 7919).input.bytes, format: undefined });
    const outcome: WriterOutcome = await checkWriter(pickWriterCase(sources, rng), rng);
    if ('failure' in outcome) failures.push(`case ${index} (${seeds[index % seeds.length].name}): ${outcome.failure}`);
    else if ('skipped' in outcome) counts.skipped++;
    else if (outcome.failed) counts.failedCleanly++;
    else {
      counts.ok++;
      counts.writes += outcome.writes;
    }
  }
  t.diagnostic(`${index} cases in ${((performance.now() - started) / 1000).toFixed(1)} s: ${counts.ok} converted (${counts.writes} writes checked), ${counts.failedCleanly} failed cleanly as their source does, ${counts.skipped} not opened or too large`);
  assert.ok(counts.ok >= 100, `only ${counts.ok} conversions ran to the end`);
  assert.deepEqual(failures.slice(0, 10), []);
});

test('the recording device flags writes past the size or outside the guest range', () => {
  const dev = new RecordingDevice(4096, 0);
  dev.range = [0, 2048];
  dev.write(Buffer.alloc(512, 1), 0);
  dev.write(Buffer.alloc(512, 1), 2048);
  dev.write(Buffer.alloc(512, 1), 4000);
  assert.equal(dev.violations.length, 2);
  assert.equal(dev.writes.length, 3);
  assert.equal(dev.bytes[0], 1);
});

test('each invariant can fail: a broken writer is caught', async () => {
  // A raw source of 64 KiB: 4 KiB of data, the rest zeros. Converting it must pass…
  const bytes = Buffer.alloc(65536);
  bytes.fill(7, 0, 4096);
  const rng = new Rng(1);
  const ok = await checkWriter({ sources: [{ bytes, format: 'raw' }], sparseSize: 4096, targetIsZero: true, guests: 2 }, rng);
  assert.ok('ok' in ok, JSON.stringify(ok));
  // …and a device that corrupts, overlaps or writes zero blocks must not.
  const { RecordingDevice: Recording } = await import('./writer-invariants.ts');
  const proto = Recording.prototype as unknown as { write: (buf: Uint8Array, pos: number) => void };
  const original = proto.write;
  const broken = async (change: (buf: Uint8Array, pos: number, self: RecordingDevice) => void) => {
    proto.write = function (this: RecordingDevice, buf: Uint8Array, pos: number) {
      change(buf, pos, this);
    };
    try {
      return await checkWriter({ sources: [{ bytes, format: 'raw' }], sparseSize: 4096, targetIsZero: true, guests: 1 }, new Rng(1));
    } finally {
      proto.write = original;
    }
  };
  const flipped = await broken(function (this: void, buf, pos, self) {
    const copy = Buffer.from(buf);
    copy[0] ^= 1;
    original.call(self, copy, pos);
  });
  assert.match('failure' in flipped ? flipped.failure : '', /output .* != source/);
  const doubled = await broken((buf, pos, self) => {
    original.call(self, buf, pos);
    original.call(self, buf, pos);
  });
  assert.match('failure' in doubled ? doubled.failure : '', /writes overlap/);
  const zeros = await broken((buf, pos, self) => {
    original.call(self, buf, pos);
    original.call(self, Buffer.alloc(4096), 8192);
  });
  assert.match('failure' in zeros ? zeros.failure : '', /all-zero write|zero block/);
});
