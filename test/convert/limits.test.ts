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

/** convert -f raw -S 0 of a sparse raw file of `gib` GiB, the n-th guest launched (from 1) given `wallMs(n)`. */
async function killedConvert(name: string, gib: number, wallMs: (launch: number) => number | undefined): Promise<{ status: number; err: string; launches: number; out: string }> {
  const src = join(dir, `${name}.raw`);
  const fd = openSync(src, 'w');
  ftruncateSync(fd, gib * 1024 * 1024 * 1024);
  closeSync(fd);
  const out = join(dir, `${name}-out.raw`);
  let err = '';
  let launches = 0;
  const run = {
    mode: 'auto',
    get limits() {
      const ms = wallMs(++launches);
      return ms === undefined ? {} : { wallMs: ms };
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
  return { status, err, launches, out };
}

test('a guest killed by the wall-clock limit during the copy leaves no output', async () => {
  // Every guest gets 200 ms of wall time, and -S 0 makes the copy write 4 GiB of zeros (2 GiB a
  // guest), which takes far longer. (With 1 GiB and the first launch unlimited, the one-round
  // copy's guests could finish their halves in time on a quiet machine.)
  const { status, err, launches, out } = await killedConvert('big', 4, () => 200);
  assert.equal(status, 1);
  assert.match(err, /^qemu-img: guest process killed: time limit exceeded/);
  assert.ok(launches >= 2, 'both copy guests were launched');
  assert.equal(existsSync(out), false, 'the half-written output is removed');
});

test('one copy guest killed while the other copies its part to the end: the convert fails, no output left', async () => {
  // The second guest has 100 ms (it dies booting or early in its stripes); the first, unlimited,
  // writes its 512 MiB of zeros to the end.
  const { status, err, launches, out } = await killedConvert('half', 1, (n) => (n === 2 ? 100 : undefined));
  assert.equal(launches, 2, 'two copy guests were launched');
  assert.equal(status, 1);
  assert.match(err, /^qemu-img: guest process killed: time limit exceeded/);
  assert.equal(existsSync(out), false, 'the output the surviving guest wrote is removed');
});
