// convert of a disk big enough for two copy guests whose reads fail in both guests' stripes
// (ops/convert/split.ts stripedRanges, chosen by INSTAR_COPY_SHARE=striped): guest 0 meets its failure further into the disk than
// guest 1 meets its own, and qemu, copying in disk order, names the first one. The host must
// report that one (host/convert/open-copy.ts inDiskOrder), not the first guest's, and leave no
// target behind. The source is a cloop image (no block status: one data run, qemu's 2 MiB chunks
// cut from 0) with two blocks that do not inflate.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync } from 'node:zlib';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './helpers.ts';
import { buildCloop, patternBlock } from '../formats/cloop/build.ts';
import { runInstar, runQemu, VERSIONS } from '../helpers/oracles.ts';
import { PARALLEL_MIN_BYTES, stripeLength, stripedRanges } from '../../src/ops/convert/split.ts';

const { dir, cleanup } = tempDir();
const at = (name: string) => join(dir, name);
const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;
const SIZE = PARALLEL_MIN_BYTES + 4 * MiB;

/** The 64 KiB block holding disk offset `offset`. */
const blockAt = (offset: number) => Math.floor(offset / BLOCK);

// Guest 1's first stripe and guest 0's third: more than qemu's 8 coroutines' chunks apart, so qemu
// has finished with the first failure before it would read the second.
const stripe = stripeLength(SIZE);
const EARLY = stripe + 2 * MiB + 300 * 1024;
const LATE = 6 * stripe + 2 * MiB + 300 * 1024;

const FRONT = 7 * MiB + BLOCK;
const SECOND_BAD = 2 * MiB + 512 * 1024;

before(() => {
  const streams = Array.from({ length: 4 }, (_, i) => deflateSync(patternBlock(BLOCK, i + 1)));
  const blocks: { stream: Buffer }[] = Array.from({ length: SIZE / BLOCK }, (_, i) => ({ stream: streams[i % streams.length] }));
  for (const offset of [EARLY, LATE]) blocks[blockAt(offset)] = { stream: Buffer.from('not a zlib stream, just bytes') };
  writeFileSync(at('two-bad.cloop'), buildCloop(BLOCK, blocks));
  // Two sources: the first ends off qemu's 2 MiB grid (7 MiB + 64 KiB), so the second's run and
  // qemu's chunks start there; guest 1's first stripe (from 8 MiB) starts inside that run. The
  // bad block at 2.5 MiB into the second source is in qemu's chunk from 2 MiB into it.
  writeFileSync(at('front.cloop'), buildCloop(BLOCK, Array.from({ length: FRONT / BLOCK }, (_, i) => ({ stream: streams[i % streams.length] }))));
  const second = blocks.map((_, i) => ({ stream: streams[i % streams.length] }));
  second[blockAt(SECOND_BAD)] = { stream: Buffer.from('not a zlib stream, just bytes') };
  writeFileSync(at('second.cloop'), buildCloop(BLOCK, second));
});
after(cleanup);

test('the layout puts the later failure in guest 0\'s stripes and the earlier one in guest 1\'s', () => {
  const owns = (worker: number, offset: number) => stripedRanges(SIZE, worker, 2).some(([s, e]) => s <= offset && offset < e);
  assert.ok(owns(1, EARLY) && owns(0, LATE));
});

/** The convert with both oracles, and instar sandboxed and in-process: the same stdout, stderr and status, no target left. */
function sameFailure(sources: string[], expectedChunk: number): void {
  for (const version of VERSIONS) {
    const cwd = at(`run-${version}`);
    mkdirSync(cwd, { recursive: true });
    const args = ['convert', '-O', 'raw', ...sources.map((s) => `../${s}`), 't.raw'];
    const expected = runQemu(version, args, { cwd });
    rmSync(join(cwd, 't.raw'), { force: true });
    assert.match(expected.stderr, new RegExp(`at byte ${expectedChunk}:`), `qemu ${version} names the chunk at ${expectedChunk}`);
    for (const sandbox of [[], ['--sandbox=none']]) {
      const actual = runInstar([...args, '--qemu-version', version, ...sandbox], { cwd, env: { INSTAR_COPY_SHARE: 'striped' } });
      const label = `${version} ${sandbox.join(' ')}`;
      assert.equal(actual.stderr, expected.stderr, `${label}: stderr`);
      assert.equal(actual.status, expected.status, `${label}: exit status`);
      assert.equal(actual.stdout, expected.stdout, `${label}: stdout`);
      assert.equal(existsSync(join(cwd, 't.raw')), false, `${label}: no target left`);
    }
  }
}

test('read errors in both guests\' stripes: qemu\'s message names the first on the disk, no target is left', () => {
  sameFailure(['two-bad.cloop'], Math.floor(EARLY / (2 * MiB)) * 2 * MiB);
});

test('a read error in a stripe that starts inside a run: its chunk is counted from the run\'s start, as qemu\'s', () => {
  assert.ok(stripedRanges(FRONT + SIZE, 1, 2)[0][0] === stripe && stripe > FRONT, 'guest 1\'s first stripe starts inside the second source');
  sameFailure(['front.cloop', 'second.cloop'], FRONT + 2 * MiB);
});
