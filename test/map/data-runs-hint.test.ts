// The host's data runs as the guest takes them: checked before use, and when the host stopped
// asking part-way (a file with more runs than a request carries), used only up to where it stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkedDataRuns } from '../../src/guest/data-runs.ts';
import { fileRun } from '../../src/formats/raw/holes.ts';
import type { BlockDevice } from '../../src/formats/types.ts';

test('malformed runs, or an end before the last run, are dropped', () => {
  assert.deepEqual(checkedDataRuns([[0, 4096]]), { runs: [[0, 4096]] });
  assert.deepEqual(checkedDataRuns([[0, 4096]], 8192), { runs: [[0, 4096]], end: 8192 });
  assert.equal(checkedDataRuns([[0, 4096]], 2048), undefined);
  assert.equal(checkedDataRuns([[0, 4096]], 1.5), undefined);
  assert.equal(checkedDataRuns([[4096, 0]]), undefined);
  assert.equal(checkedDataRuns([[0, 8192], [4096, 12288]]), undefined);
  assert.equal(checkedDataRuns('x'), undefined);
});

/** 16 KiB: a data block, then zeros written (st_blocks says partly sparse). */
function device(hint: { runs: [number, number][]; end?: number }): BlockDevice {
  const bytes = new Uint8Array(16384);
  bytes[5] = 1;
  return {
    size: bytes.length,
    allocated: 8192,
    dataRuns: hint.runs,
    ...(hint.end !== undefined ? { dataRunsEnd: hint.end } : {}),
    read(buf, pos) {
      const n = Math.max(0, Math.min(buf.length, bytes.length - pos));
      buf.set(bytes.subarray(pos, pos + n));
      return n;
    },
  };
}

test('runs that describe the whole file are taken as they are', () => {
  const dev = device({ runs: [[0, 4096], [8192, 12288]] });
  assert.deepEqual(fileRun(dev, 4096, 12288), { length: 4096, hole: true });
  assert.deepEqual(fileRun(dev, 8192, 8192), { length: 4096, hole: false });
});

test('past where the host stopped, the zero-block guess takes over', () => {
  const dev = device({ runs: [[0, 4096], [8192, 12288]], end: 8192 });
  // Before the end the runs rule (the zeros at 4 KiB are a hole by them), and a run is cut at the end.
  assert.deepEqual(fileRun(dev, 4096, 12288), { length: 4096, hole: true });
  // From the end on, the bytes: the written block at 8 KiB is zeros, so a hole by the guess.
  assert.deepEqual(fileRun(dev, 8192, 8192), { length: 8192, hole: true });
});
