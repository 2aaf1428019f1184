// A guest killed by its limits in the middle of the copy: the command fails with the reason and
// the output the host created is removed (no half-written file that looks finished).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { convert } from '../../src/host/commands/convert.ts';
import type { CommandContext } from '../../src/host/commands/types.ts';
import { profileFor } from '../../src/output/profile.ts';
import { DEFAULT_MAX_DEPTH } from '../../src/host/paths/policy.ts';
import type { RunOptions } from '../../src/host/sandbox/run.ts';
import { tempDir } from './helpers.ts';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

test('a guest killed by the wall-clock limit during the copy leaves no output', async () => {
  const src = join(dir, 'big.raw');
  const fd = openSync(src, 'w');
  ftruncateSync(fd, 4 * 1024 * 1024 * 1024);
  closeSync(fd);
  const out = join(dir, 'out.raw');
  let err = '';
  // Every guest gets 200 ms of wall time, and -S 0 makes the copy write 4 GiB of zeros (2 GiB a
  // guest), which takes far longer. (With 1 GiB and the first launch unlimited, the one-round
  // copy's guests could finish their halves in time on a quiet machine.)
  let phase = 0;
  const run = {
    mode: 'auto',
    get limits() {
      phase++;
      return { wallMs: 200 };
    },
  } as RunOptions;
  const ctx: CommandContext = {
    progname: 'qemu-img',
    out: () => {},
    err: (t) => void (err += t),
    profile: profileFor('10.0'),
    globals: { debug: false, allowPaths: [dir], unsafeQuirks: false, ignoreQuirks: false },
    run,
    policy: { allow: [dir], maxDepth: DEFAULT_MAX_DEPTH },
  };
  const options = new Map([['source-format', ['raw']], ['sparse-size', ['0']]]);
  const status = await convert({ name: 'convert', options, args: [src, out], sequence: [['source-format', 'raw'], ['sparse-size', '0']] }, ctx);
  assert.equal(status, 1);
  assert.match(err, /^qemu-img: guest process killed: time limit exceeded/);
  assert.ok(phase >= 2, 'both copy guests were launched');
  assert.equal(existsSync(out), false, 'the half-written output is removed');
});
