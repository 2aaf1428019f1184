// The guest's last message arrives whole however large it is: the guest writes it to fd 3 with
// blocking writes and only then exits, and the host reads the pipe to its end before it looks at
// the exit. A result of megabytes fills the pipe many times over: written through a stream (a
// net.Socket on fd 3, queued on the event loop), most of it is lost at process.exit and the host
// says "ended without a result (exit status 0)" (measured with that change to serve.ts's send).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { HOSTILE_GUEST, runHostile, scratchDir, writeInput } from './helpers.ts';

describe('the guest\'s last message', () => {
  const scratch = scratchDir();
  let input = '';
  before(() => {
    assert.ok(readFileSync(HOSTILE_GUEST).length > 0, 'build the test guest first: npm run build');
    input = writeInput(scratch.dir, 'input.img', Buffer.alloc(4096));
  });
  after(() => scratch.cleanup());

  for (const bytes of [100, 12 * 1024 * 1024]) {
    it(`arrives whole when it is ${bytes} bytes and the guest exits right after it`, async () => {
      const value = (await runHostile('auto', 'big-result', input, { bytes })) as { blob: string };
      assert.equal(value.blob.length, bytes);
      assert.ok(/^r*$/.test(value.blob));
    });
  }
});
