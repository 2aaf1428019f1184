// convert of a source whose read fails in the second MiB of one of qemu's 2 MiB chunks: a cloop
// image (no block status: one data run) with one block of garbage instead of zlib. qemu reads a
// whole chunk at once and names its start ("error while reading at byte N"); instar reads 1 MiB
// buffers and must name the chunk, not its buffer, with -p (chunks as qemu's) and without (runs
// merged, the failing chunk found again). With -p, qemu's coroutines (-m, 8 by default) print a
// chunk's line when they claim it, before reading it: after a failed read the lines of the chunks
// the others had claimed are out too. Images of at most 8 chunks (all claimed at once) and -m 1
// keep that deterministic in qemu; with more coroutines than that its lines vary from run to run.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './helpers.ts';
import { buildCloop, patternBlock } from '../formats/cloop/build.ts';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';
import { runInstarMode, tierModes } from './in-process-cli.ts';
// Its tier's modes (tierModes) differ in the long tier, which runs the files that import this.
import '../helpers/long.ts';

const { dir, cleanup } = tempDir();
const at = (name: string) => join(dir, name);
const BLOCK = 64 * 1024;

/** A cloop image of `count` 64 KiB blocks, block `bad` a stream that does not inflate. */
function badCloop(name: string, count: number, bad: number): void {
  const blocks: (Buffer | { stream: Buffer })[] = Array.from({ length: count }, (_, i) => patternBlock(BLOCK, i + 1));
  blocks[bad] = { stream: Buffer.from('not a zlib stream, just bytes') };
  writeFileSync(at(name), buildCloop(BLOCK, blocks));
}

before(() => {
  // 4 MiB, the bad block at 1.25 MiB: qemu's chunk [0, 2 MiB) fails.
  badCloop('early.cloop', 64, 20);
  // 8 MiB, the bad block at 5.25 MiB: chunk [4 MiB, 6 MiB) fails; the chunks before it copy.
  badCloop('late.cloop', 128, 84);
  // The bad block at the start of a chunk's second MiB (3 MiB): chunk [2 MiB, 4 MiB).
  badCloop('edge.cloop', 64, 48);
  // 40 MiB, the bad block at 20.6 MiB: chunk 10 of 20 fails.
  badCloop('big.cloop', 640, 330);
});
after(cleanup);

/**
 * The command with both oracles and instar (default sandbox and in-process): stdout, stderr and
 * exit status. Not the target: qemu leaves a half-written one, which
 * instar removes by design (DESIGN.md §1). Returns qemu 10.0's stderr. The short tier runs
 * in-process in this process and sandboxed under 10.0 only (tierModes, in-process-cli.ts).
 */
async function compareRun(image: string, progress: boolean, extra: string[] = []): Promise<string> {
  let last = '';
  for (const version of VERSIONS) {
    const cwd = at(`run-${version}`);
    mkdirSync(cwd, { recursive: true });
    const args = ['convert', ...extra, ...(progress ? ['-p'] : []), '-O', 'raw', `../${image}`, 't.raw'];
    const expected = runQemu(version, args, { cwd });
    rmSync(join(cwd, 't.raw'), { force: true });
    for (const sandbox of tierModes(version)) {
      const actual = await runInstarMode([...args, '--qemu-version', version], sandbox, cwd);
      rmSync(join(cwd, 't.raw'), { force: true });
      const label = `${version} ${args.join(' ')} ${sandbox.join(' ')}`;
      assert.equal(actual.stderr, expected.stderr, `${label}: stderr`);
      assert.equal(actual.status, expected.status, `${label}: exit status`);
      assert.equal(actual.stdout, expected.stdout, `${label}: stdout`);
    }
    last = expected.stderr;
  }
  return last;
}

describe('a read that fails in the second MiB of a chunk', () => {
  for (const [image, offset] of [['early.cloop', 0], ['late.cloop', 4194304], ['edge.cloop', 2097152]] as const) {
    test(`${image}: named by its chunk`, async () => {
      // What qemu does, pinned (the comparison is what instar is held to).
      assert.equal(await compareRun(image, false), `qemu-img: error while reading at byte ${offset}: Input/output error\n`);
    });
    test(`-p ${image}: the lines of the chunks claimed, then the error`, async () => void (await compareRun(image, true)));
  }
  test('-p -m 1, the failure at chunk 10 of 20: lines up to it', async () => {
    await compareRun('big.cloop', true, ['-m', '1']);
  });
  test('-m 1 without -p', async () => void (await compareRun('big.cloop', false, ['-m', '1'])));
});

describe('-m as qemu checks it', () => {
  for (const m of ['0', '17', 'x', '1k', '4abc', '-1', '+3', ' 4', '99999999999999999999']) {
    test(`-m '${m}'`, async () => void (await compareRun('early.cloop', false, ['-m', m])));
  }
});
