// Randomized safe rebases (seeded): old and new backing files of random cluster sizes, formats and
// lengths, random writes, zero writes and discards everywhere, onto a new file or onto nothing.
// qemu's copy loop is sequential: stdout (-p), stderr, status and the top must be byte-identical.
// SAFE_REBASE_SEEDS=n runs more seeds (a campaign; the short tier runs 3, the long tier 30).
import { after, test } from 'node:test';
import { VERSIONS } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';
import { LONG } from '../helpers/long.ts';
import { TwinDirs, assertSameOutcome } from './harness.ts';
import { ImageBuilder, type Level } from '../commit/harness.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
after(() => {
  builder.remove();
  twins.remove();
});

const CLUSTERS = ['512', '4k', '64k', '2M'];
const MiB = 1024 * 1024;

function writes(next: () => number, size: number, count: number, raw: boolean): string[] {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const offset = (next() % (size / 512)) * 512;
    const length = Math.min(size - offset, ((next() % 512) + 1) * 512);
    const kind = next() % 6;
    out.push(kind === 0 && !raw ? `write -z ${offset} ${length}` : kind === 1 && !raw ? `discard ${offset} ${length}` : `write -P ${1 + (next() % 250)} ${offset} ${length}`);
  }
  return out;
}

test('safe rebase of random chains matches qemu-img byte for byte', () => {
  for (let seed = 1; seed <= Number(process.env.SAFE_REBASE_SEEDS ?? (LONG ? 30 : 3)); seed++) {
    const next = prng(seed * 104729);
    const pick = <T>(list: readonly T[]) => list[next() % list.length];
    const topSize = (4 + (next() % 5)) * MiB;
    const oldSize = topSize - (next() % 3) * 512 * 1024;
    const newSize = topSize + ((next() % 3) - 1) * 512 * 1024;
    const newRaw = next() % 3 === 0;
    const levels: Level[] = [
      { name: 'old.qcow2', create: ['-f', 'qcow2', '-o', `cluster_size=${pick(CLUSTERS)}`], size: String(oldSize), writes: writes(next, oldSize, 5, false) },
      newRaw
        ? { name: 'new.raw', create: ['-f', 'raw'], size: String(newSize), writes: writes(next, newSize, 4, true), format: 'raw' }
        : { name: 'new.qcow2', create: ['-f', 'qcow2', '-o', `cluster_size=${pick(CLUSTERS)}`], size: String(newSize), writes: writes(next, newSize, 4, false) },
      { name: 't.qcow2', create: ['-f', 'qcow2', '-o', `cluster_size=${pick(CLUSTERS)},compat=${pick(['1.1', '0.10'])}`, '-b', 'old.qcow2', '-F', 'qcow2'], size: String(topSize), writes: writes(next, topSize, 5, false) },
    ];
    const files = builder.chain(levels);
    const target = next() % 4 === 0 ? ['-b', ''] : ['-b', levels[1].name, '-F', newRaw ? 'raw' : 'qcow2'];
    const version = VERSIONS[seed % 2];
    const r = twins.run(version, files, ['rebase', '-p', ...target, 't.qcow2']);
    assertSameOutcome(r, Object.keys(files), `seed ${seed} (${version}): rebase ${target.join(' ')}`);
  }
});
