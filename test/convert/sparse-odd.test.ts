// convert -S with a size that is no power of two (3k, 1536, 5.5k, 12k, 1000k): qemu looks at its
// chunks sector by sector, lets data run on across zero gaps shorter than -S and moves run ends
// to the largest power of two in -S (src/ops/convert/sparse-runs.ts). instar's files (qcow2 and
// raw, new and -n) and a raw target's holes must be qemu's, from a raw and a qcow2 source of
// several of qemu's 2 MiB chunks whose data and zero runs have every length from one sector up.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemu, sameAsOracles, scratch } from '../convert-image/harness.ts';
import { runInstar, VERSIONS } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';

const work = scratch();
const dir = work.dir;
const SIZE = 5 * 1024 * 1024 + 3 * 512;

before(() => {
  const next = prng(75);
  const disk = Buffer.alloc(SIZE);
  const data = (sector: number) => (disk[sector * 512 + (next() % 512)] = 1 + (next() % 255));
  // Each 64 KiB: a few data sectors somewhere, zero gaps of 1 to 12 sectors between some, and
  // now and then data in its last sector (a run that ends just before a cluster boundary).
  for (let region = 0; region < SIZE / 65536; region++) {
    const first = region * 128;
    let sector = first + (region * 7) % 100;
    for (let run = 0; run < region % 5; run++) {
      for (let s = 0; s <= region % 3; s++) data(sector + s);
      sector += 1 + (region % 3) + 1 + ((region + run) % 12);
    }
    if (region % 3 === 0) data(first + 127);
  }
  writeFileSync(join(dir, 'src.raw'), disk);
  qemu(['convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4k', 'src.raw', 'src.qcow2'], dir);
  qemu(['create', '-q', '-f', 'raw', 'into.raw', String(SIZE)], dir);
});
after(() => work.cleanup());

/** qemu-img map of a raw file: where its data and holes are. */
const allocation = (path: string) => qemu(['map', '--output=json', '-f', 'raw', path]);

const CASES: [string, string[]][] = [
  ['3k', ['-f', 'raw', '../src.raw', '-O', 'qcow2', 'out.qcow2']],
  ['1536', ['-f', 'qcow2', '../src.qcow2', '-O', 'qcow2', 'out.qcow2']],
  ['5632', ['-f', 'raw', '../src.raw', '-O', 'raw', 'out.raw']],
  ['12k', ['-f', 'qcow2', '../src.qcow2', '-O', 'raw', 'out.raw']],
  ['1000k', ['-f', 'raw', '../src.raw', '-O', 'raw', 'out.raw']],
];

for (const [i, [sparse, args]] of CASES.entries()) {
  test(`-S ${sparse}: ${args.join(' ')}`, () => {
    const [ours] = sameAsOracles(dir, ['convert', '-S', sparse, ...args], { label: `s${i}`, profiles: [VERSIONS[i % 2]], sandbox: i === 0 });
    if (args.includes('raw') && args.at(-1) === 'out.raw') {
      assert.equal(allocation(join(ours.dir, 'out.raw')), allocation(join(dir, `s${i}-${VERSIONS[i % 2]}-${VERSIONS[i % 2]}`, 'out.raw')), 'holes');
    }
  });
}

test('-S 3k -n into a raw file: the same bytes and holes', () => {
  for (const v of VERSIONS) {
    const [theirs, mine] = ['qemu', 'instar'].map((tool) => {
      const target = join(dir, `into-${tool}-${v}.raw`);
      qemu(['create', '-q', '-f', 'raw', target, String(SIZE)]);
      return target;
    });
    const args = (target: string) => ['convert', '-n', '-S', '3k', '-f', 'raw', join(dir, 'src.raw'), '-O', 'raw', target];
    qemu(args(theirs), undefined, v);
    const r = runInstar([`--qemu-version=${v}`, ...args(mine)], { timeoutMs: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(readFileSync(mine).equals(readFileSync(theirs)), `bytes (${v})`);
    assert.equal(allocation(mine), allocation(theirs), `holes (${v})`);
  }
});
