// convert -O raw into a target it creates: qemu's file driver writes zeros over the first block
// (4 KiB; one sector for targets under 4 KiB) when it grows the new empty file, so the block is
// allocated even where the disk is zeros. instar's output must have the same allocated blocks
// (st_blocks) as both oracles' outputs, on a fresh target (one round of guests), an existing one
// (two rounds), sandboxed and not.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS } from '../helpers/oracles.ts';
import { qemu, qemuIo, sha256, tempDir } from './helpers.ts';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
  // Data only at 8 MiB: the first block of the disk is a hole in the source.
  writeFileSync(join(dir, 'island.raw'), '');
  truncateSync(join(dir, 'island.raw'), 16 * MiB);
  qemuIo(join(dir, 'island.raw'), ['write -P 3 8M 64k'], 'raw');
  writeFileSync(join(dir, 'empty.raw'), '');
  truncateSync(join(dir, 'empty.raw'), 16 * MiB);
  writeFileSync(join(dir, 'tiny.raw'), '');
  truncateSync(join(dir, 'tiny.raw'), 1000);
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'island.qcow2'), '16M']);
  qemuIo(join(dir, 'island.qcow2'), ['write -P 5 4M 4k']);
});
after(() => cleanup());

const blocks = (path: string) => statSync(path).blocks;

/** Converts `args` into out-<who>.raw (removed first unless `existing`); returns blocks and hash. */
function run(who: string, args: string[], existing: boolean): { blocks: number; hash: string } {
  const out = join(dir, `out-${who}.raw`);
  if (!existing) rmSync(out, { force: true });
  const r = who.startsWith('instar') ? runInstar(['convert', ...args, out, ...(who === 'instar-none' ? ['--sandbox=none'] : [])], { cwd: dir }) : runQemu(who as (typeof VERSIONS)[number], ['convert', ...args, out], { cwd: dir });
  assert.equal(r.status, 0, `${who} ${args.join(' ')}: ${r.stderr}`);
  return { blocks: blocks(out), hash: sha256(out) };
}

const sources: [string, string[]][] = [
  ['raw with data far from the start', ['-f', 'raw', '-O', 'raw', 'island.raw']],
  ['raw of zeros only', ['-f', 'raw', '-O', 'raw', 'empty.raw']],
  ['raw smaller than a block (one sector written)', ['-f', 'raw', '-O', 'raw', 'tiny.raw']],
  ['qcow2 with one cluster of data', ['-O', 'raw', 'island.qcow2']],
];

for (const [name, args] of sources) {
  test(`first block allocated as qemu allocates it: ${name}`, () => {
    for (const existing of [false, true]) {
      const [oldest, newest] = VERSIONS.map((v) => run(v, args, existing));
      assert.deepEqual(oldest, newest, 'the two oracles agree');
      // Guard: qemu's output has a block allocated, though the source's first block is a hole.
      assert.ok(oldest.blocks > 0);
      for (const who of ['instar', 'instar-none']) {
        assert.deepEqual(run(who, args, existing), oldest, `${who}${existing ? ' over an existing target' : ''}`);
      }
    }
  });
}
