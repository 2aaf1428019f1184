// Random sequences of bitmap actions (names, granularities and merge sources drawn from a fixed
// seed) on images with bitmap data, differential against both oracles, byte for byte. The short
// tier runs a handful; `npm run test:long` runs many more.
import { after, before, test } from 'node:test';
import { VERSIONS } from '../helpers/oracles.ts';
import { LONG } from '../helpers/long.ts';
import { compareBitmap, Workspace } from './harness.ts';
import { buildFixtures, type Fixtures } from './fixtures.ts';

const ws = new Workspace();
let files: Fixtures;
before(() => { files = buildFixtures(ws); });
after(() => ws.remove());

/** A small deterministic generator (mulberry32), so a failure names a reproducible case. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomArgs(next: () => number): [string, string[]] {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)];
  const image = pick(['data.qcow2', 'small.qcow2', 'edge.qcow2', 'inuse.qcow2']);
  const args: string[] = [];
  const count = 1 + Math.floor(next() * 4);
  for (let i = 0; i < count; i++) {
    const kind = pick(['add', 'remove', 'clear', 'enable', 'disable', 'merge', 'merge']);
    args.push(`--${kind}`);
    if (kind === 'merge') args.push(pick(['b', 'c', 'd', 'zz']));
  }
  if (args.includes('--add') && next() < 0.5) args.push('-g', pick(['512', '4k', '64k', '1M']));
  args.push(image, pick(['b', 'c', 'd', 'e']));
  return [image, args];
}

const RUNS = LONG ? 200 : 8;

for (const version of VERSIONS) {
  test(`random bitmap action sequences match qemu-img ${version}`, async () => {
    const next = random(version === '7.2' ? 72 : 100);
    for (let i = 0; i < RUNS; i++) {
      const [image, args] = randomArgs(next);
      await compareBitmap(ws, version, { [image]: files[image] }, args);
    }
  });
}
