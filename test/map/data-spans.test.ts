// A file with more data runs than one request carries: the host sends its first runs exactly and
// coarse spans over the rest, so that the guest reads only inside the spans and skips the wide holes
// between them (before, everything past the budget was read: a 52 GiB file with 300 000 runs took
// minutes to map or compare). The guessed map must still be qemu's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { checkedDataRuns } from '../../src/guest/data-runs.ts';
import { fileDataRunsUpTo } from '../../src/host/data-runs.ts';
import { fileRun } from '../../src/formats/raw/holes.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import type { BlockDevice } from '../../src/formats/types.ts';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { testTempDir } from '../helpers/temp-dir.ts';

const MiB = 1024 * 1024;
/** Where the file's 4 KiB data blocks start: 30 close together, 10 after a wide hole, 1 after another. */
const BLOCKS = [
  ...Array.from({ length: 30 }, (_, i) => i * 8192),
  ...Array.from({ length: 10 }, (_, i) => 64 * MiB + i * 8192),
  160 * MiB,
];
const SIZE = 192 * MiB;

function buildFile(dir: string): string {
  const path = join(dir, 'runs.raw');
  const fd = openSync(path, 'w');
  ftruncateSync(fd, SIZE);
  for (const at of BLOCKS) writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, at);
  closeSync(fd);
  return path;
}

test('spans are checked as runs are: sorted, disjoint, from where the runs stop', () => {
  assert.deepEqual(checkedDataRuns([[0, 4096]], 8192, [[8192, 12288], [16384, 20480]]), { runs: [[0, 4096]], end: 8192, spans: [[8192, 12288], [16384, 20480]] });
  assert.equal(checkedDataRuns([[0, 4096]], 8192, [[4096, 12288]]), undefined);
  assert.equal(checkedDataRuns([[0, 4096]], 8192, [[16384, 20480], [8192, 12288]]), undefined);
  assert.equal(checkedDataRuns([[0, 4096]], undefined, [[8192, 12288]]), undefined);
  assert.equal(checkedDataRuns([[0, 4096]], 8192, 'x'), undefined);
});

test('over its budget the host keeps the first runs exact and spans that skip the widest holes', (t) => {
  const path = buildFile(testTempDir(t, 'instar-spans-'));
  const fd = openSync(path, 'r');
  t.after(() => closeSync(fd));
  // Within the budget: every run exact, no spans.
  const whole = fileDataRunsUpTo(fd, 64);
  assert.deepEqual(whole, { runs: BLOCKS.map((b) => [b, b + 4096]) });
  const answer = fileDataRunsUpTo(fd, 32);
  assert.ok(answer?.spans && answer.end !== undefined);
  assert.ok(answer.runs.length + answer.spans.length <= 32);
  assert.deepEqual(answer.runs, BLOCKS.slice(0, answer.runs.length).map((b) => [b, b + 4096]));
  assert.equal(answer.end, BLOCKS[answer.runs.length]);
  // Every data block past the runs lies in a span; the two 60+ MiB holes lie outside all spans.
  for (const b of BLOCKS.slice(answer.runs.length)) assert.ok(answer.spans.some(([s, e]) => s <= b && b + 4096 <= e), `block at ${b}`);
  for (const hole of [32 * MiB, 128 * MiB]) assert.ok(!answer.spans.some(([s, e]) => s <= hole && hole < e), `hole at ${hole}`);
});

/** The file as the guest sees it, counting the bytes it reads. */
function countingDevice(fd: number, budget: number): { dev: BlockDevice; bytesRead: () => number } {
  const a = fileDataRunsUpTo(fd, budget);
  const inner = new FdDevice(fd, false, checkedDataRuns(a?.runs, a?.end, a?.spans));
  let read = 0;
  const dev: BlockDevice = {
    size: inner.size,
    allocated: inner.allocated,
    dataRuns: inner.dataRuns,
    dataRunsEnd: inner.dataRunsEnd,
    dataSpans: inner.dataSpans,
    read(buf, pos) {
      const n = inner.read(buf, pos);
      read += n;
      return n;
    },
  };
  return { dev, bytesRead: () => read };
}

/** [start, length, data] runs of the file by fileRun, joined where they agree (as map prints them). */
function guestMap(dev: BlockDevice): [number, number, boolean][] {
  const out: [number, number, boolean][] = [];
  for (let pos = 0; pos < dev.size; ) {
    const run = fileRun(dev, pos, dev.size - pos);
    const last = out[out.length - 1];
    if (last && last[2] === !run.hole) last[1] += run.length;
    else out.push([pos, run.length, !run.hole]);
    pos += run.length;
  }
  return out;
}

test('the guest reads only inside the spans, and its map is qemu-img map', (t) => {
  const path = buildFile(testTempDir(t, 'instar-spans-'));
  const fd = openSync(path, 'r');
  t.after(() => closeSync(fd));
  const { dev, bytesRead } = countingDevice(fd, 32);
  const map = guestMap(dev);
  // The spans past the runs hold 11 blocks and the narrow holes between them: well under a MiB,
  // where guessing past the runs would read the 192 MiB file's holes.
  assert.ok(bytesRead() < MiB, `read ${bytesRead()} bytes`);
  for (const version of VERSIONS) {
    const r = runQemu(version, ['map', '-f', 'raw', '--output=json', path]);
    assert.equal(r.status, 0, r.stderr);
    const qemu = (JSON.parse(r.stdout) as { start: number; length: number; data: boolean }[]).map((e) => [e.start, e.length, e.data]);
    assert.deepEqual(map, qemu, `qemu ${version}`);
  }
});
