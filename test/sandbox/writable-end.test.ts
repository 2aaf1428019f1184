// A guest with an output is ended by the host once its result is in (it sends the result after
// its writes), instead of waiting for node's teardown; the host still waits for the guest's exit
// before it goes on (to its fsync), so the result stands and the writes made before it are there.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runOp } from '../../src/host/sandbox/run.ts';
import { HOSTILE_GUEST, scratchDir, writeInput } from './helpers.ts';

describe('a guest with an output, after its result', () => {
  const scratch = scratchDir();
  after(() => scratch.cleanup());

  it('is ended at once: a guest lingering 30 s in its exit does not hold the host, and its writes stand', async () => {
    const input = writeInput(scratch.dir, 'input.img', Buffer.alloc(4096));
    const output = join(scratch.dir, 'out.img');
    const inFd = openSync(input, 'r');
    const outFd = openSync(output, 'w');
    const started = Date.now();
    try {
      const value = await runOp('write-then-linger', { ms: 30_000 }, [{ fd: inFd, role: 'input', writable: false }, { fd: outFd, role: 'output', writable: true }], { mode: 'auto', guestPath: HOSTILE_GUEST });
      assert.deepEqual(value, { written: true });
    } finally {
      closeSync(inFd);
      closeSync(outFd);
    }
    // Far below the 30 s the guest would linger: the host did not wait for it.
    assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
    assert.equal(readFileSync(output, 'latin1'), 'written');
  });
});
