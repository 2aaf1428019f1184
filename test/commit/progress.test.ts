// `commit -p`, differential over tops with data, zero clusters, compressed clusters and holes, on
// bases of several cluster sizes and versions. qemu's commit is a mirror job whose progress its
// event loop prints each time it wakes: how many times it prints 0% and 100% follows its
// timing, so runs of one repeated line are collapsed here; every other byte is compared.
// Deterministic shapes (one data operation; zero writes into a qcow2 base, which its lock
// serialises) must match exactly. Where data copies overlap in qemu's thread pool, its
// intermediate steps vary from run to run (measured: 15-20 runs a shape, both releases): there
// instar prints every step, and qemu's steps must be among them.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { type TwinRun } from '../rebase/harness.ts';
import { ImageBuilder, collapseRepeats, sameDisk } from './harness.ts';
import { formatPercent } from '../../src/output/progress.ts';
import { TwinDirs } from '../check/fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import '../helpers/long.ts';

/** qemu-img create arguments for the base b (format fmt), then the top t.qcow2 over it. */
interface Shape {
  name: string;
  size: string;
  base: string[];
  top: string[];
  /** qemu-io commands on t.qcow2, each its own run (compressed writes need that) unless `batch`. */
  writes: string[];
  batch?: boolean;
  /** qemu-io commands on the base first. */
  baseWrites?: string[];
  baseFormat?: 'raw' | 'qcow2';
  /** qemu-io commands on m.qcow2, a level between the base and the top (its create arguments: `mid`). */
  mid?: { create: string[]; writes: string[] };
  /** commit's options before the top's name. */
  args?: string[];
  /** Deterministic in qemu: the intermediate percentages it always prints. */
  steps?: string[];
  /** Not deterministic: instar prints every step of `of` equal operations; qemu a subset. */
  of?: number;
}

const SHAPES: Shape[] = [
  { name: 'one data cluster', size: '4M', base: [], top: [], writes: ['write -P 3 0 64k'], steps: [] },
  { name: '1 MiB of data: one operation', size: '4M', base: [], top: [], writes: ['write -P 3 0 1M'], steps: [] },
  { name: 'one compressed cluster', size: '4M', base: [], top: [], writes: ['write -c -P 5 1M 64k'], steps: [] },
  { name: 'nothing allocated', size: '4M', base: [], top: [], writes: [], steps: [] },
  { name: 'partial last chunk', size: '1000k', base: [], top: [], writes: ['write -P 2 960k 40k'], steps: [] },
  // Zero clusters under one L2 table of the base: only the first write waits for I/O.
  { name: 'zeros, one L2 table', size: '4M', base: [], top: [], writes: ['write -z 0 64k', 'write -z 1M 64k', 'write -z 2M 64k', 'write -z 3M 64k'], steps: [] },
  // 4 KiB base clusters: an L2 table per 2 MiB, each allocated by its first zero write.
  { name: 'zeros, four L2 tables', size: '8M', base: ['-o', 'cluster_size=4k'], top: ['-o', 'cluster_size=4k'], writes: ['write -z 0 4k', 'write -z 2M 4k', 'write -z 4M 4k', 'write -z 6M 4k'], steps: ['25.00', '50.00', '75.00'] },
  { name: 'zero runs of unequal length', size: '8M', base: ['-o', 'cluster_size=4k'], top: [], writes: ['write -z 0 64k', 'write -z 2M 128k', 'write -z 4M 64k', 'write -z 6M 192k'], steps: ['14.29', '42.86', '57.14'] },
  { name: 'zeros over base data', size: '8M', base: ['-o', 'cluster_size=4k'], baseWrites: ['write -P 1 2M 4k', 'write -P 1 4M 4k'], top: [], writes: ['write -z 0 4k', 'write -z 2M 4k', 'write -z 4M 4k'], steps: ['33.33', '66.67'] },
  { name: 'zeros into a compat=0.10 base', size: '8M', base: ['-o', 'compat=0.10,cluster_size=4k'], top: [], writes: ['write -z 0 4k', 'write -z 2M 4k', 'write -z 4M 4k'], steps: ['33.33', '66.67'] },
  // A zero run across the top's L2 tables (32 KiB with 512-byte clusters): qemu's block status
  // ends with each, so each is a write of its own, into a base L2 table of its own.
  { name: 'a zero run across L2 tables', size: '1M', base: ['-o', 'cluster_size=512'], top: ['-o', 'cluster_size=512'], writes: ['write -z 16k 96k'], steps: ['16.67', '50.00', '83.33'] },
  // Overlapping copies.
  { name: 'four data clusters', size: '4M', base: [], top: [], writes: ['write -P 3 0 64k', 'write -P 3 1M 64k', 'write -P 3 2M 64k', 'write -P 3 3M 64k'], of: 4 },
  { name: 'four compressed clusters', size: '4M', base: [], top: [], writes: ['write -c -P 3 0 64k', 'write -c -P 4 64k 64k', 'write -c -P 4 128k 64k', 'write -c -P 4 192k 64k'], of: 4 },
  { name: '2 MiB of data: two operations', size: '4M', base: [], top: [], writes: ['write -P 1 0 2M'], of: 2 },
  // Block status ends at each L2 table of the top (32 KiB here) and where its clusters stop being
  // contiguous in the file: operations of one 64 KiB chunk, and of one cluster.
  { name: '2 MiB of 512-byte clusters', size: '4M', base: [], top: ['-o', 'cluster_size=512'], writes: ['write -P 1 0 2M'], of: 32 },
  { name: 'data clusters stored backwards', size: '4M', base: [], top: [], writes: ['write -P 1 128k 64k', 'write -P 1 64k 64k', 'write -P 1 0 64k'], of: 3 },
  // More zero writes than the 16 the mirror keeps in flight.
  { name: 'zeros, 64 L2 tables', size: '2M', base: ['-o', 'cluster_size=512'], top: ['-o', 'cluster_size=512'], writes: Array.from({ length: 64 }, (_, i) => `write -z ${i * 32}k 512`), batch: true, of: 64 },
  // Two levels above the base (-b): the dirty chunks are what either allocates.
  { name: 'zeros from two levels', size: '8M', base: ['-o', 'cluster_size=4k'], mid: { create: [], writes: ['write -z 2M 4k', 'write -z 6M 8k'] }, top: [], writes: ['write -z 0 4k', 'write -z 4M 4k'], args: ['-b', 'b.qcow2'], steps: ['25.00', '50.00', '75.00'] },
  { name: 'zeros into a raw base', size: '8M', base: [], top: [], baseFormat: 'raw', writes: ['write -z 0 64k', 'write -z 2M 64k', 'write -z 4M 64k'], of: 3 },
];

const builder = new ImageBuilder();
const twins = new TwinDirs();
after(() => {
  builder.remove();
  twins.remove();
});

/** The shape's files (built by qemu-img and qemu-io 7.2), keyed by name. */
function build(shape: Shape, index: number): Record<string, Uint8Array> {
  const dir = join(builder.root, `shape${index}`);
  mkdirSync(dir);
  const fmt = shape.baseFormat ?? 'qcow2';
  const run = (args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img') => {
    const r = runQemu('7.2', args, { cwd: dir }, tool);
    assert.equal(r.status, 0, `${shape.name}: ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  };
  run(['create', '-q', '-f', fmt, ...shape.base, `b.${fmt}`, shape.size]);
  if (shape.baseWrites) run(['-f', fmt, ...shape.baseWrites.flatMap((w) => ['-c', w]), `b.${fmt}`], 'qemu-io');
  let below = [`b.${fmt}`, fmt];
  if (shape.mid) {
    run(['create', '-q', '-f', 'qcow2', ...shape.mid.create, '-b', below[0], '-F', below[1], 'm.qcow2', shape.size]);
    run(['-f', 'qcow2', ...shape.mid.writes.flatMap((w) => ['-c', w]), 'm.qcow2'], 'qemu-io');
    below = ['m.qcow2', 'qcow2'];
  }
  run(['create', '-q', '-f', 'qcow2', ...shape.top, '-b', below[0], '-F', below[1], 't.qcow2', shape.size]);
  const runs = shape.batch ? [shape.writes] : shape.writes.map((w) => [w]);
  for (const writes of runs) if (writes.length > 0) run(['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), 't.qcow2'], 'qemu-io');
  return Object.fromEntries(readdirSync(dir).map((name) => [name, readFileSync(join(dir, name))]));
}

const line = (percent: string): string => `    (${percent}/100%)\r`;
const expected = (steps: string[]): string => [line('0.00'), ...steps.map(line), line('100.00'), '\nImage committed.\n'].join('');
/** The percentages between the first 0% and the last 100% of a collapsed output. */
const middle = (stdout: string): string[] => [...stdout.matchAll(/\(([0-9.]+)\/100%\)/g)].map((m) => m[1]).filter((p) => p !== '0.00' && p !== '100.00');
const everyStep = (n: number): string[] => Array.from({ length: n - 1 }, (_, k) => formatPercent(Math.fround(Math.fround((k + 1) / n) * 100)));

function assertCommitted(r: TwinRun, shape: Shape, label: string): void {
  assert.equal(r.instar.stderr, r.qemu.stderr, `${label}: stderr`);
  assert.equal(r.instar.status, 0, `${label}: instar status (stderr: ${r.instar.stderr})`);
  assert.equal(r.qemu.status, 0, `${label}: qemu status`);
  const fmt = shape.baseFormat ?? 'qcow2';
  assert.ok(sameDisk('10.0', join(r.instarDir, `b.${fmt}`), join(r.qemuDir, `b.${fmt}`), fmt), `${label}: the bases read differently`);
}

SHAPES.forEach((shape, index) => {
  test(`commit -p progress: ${shape.name}`, () => {
    const files = build(shape, index);
    for (const version of VERSIONS) {
      const label = `${version} ${shape.name}`;
      const r = twins.run(version, files, ['commit', '-p', ...(shape.args ?? []), 't.qcow2']);
      assertCommitted(r, shape, label);
      const instar = collapseRepeats(r.instar.stdout);
      const qemu = collapseRepeats(r.qemu.stdout);
      if (shape.steps) {
        assert.equal(instar, expected(shape.steps), `${label}: stdout`);
        // qemu's timing still shows under load (a zero write can finish before the one ahead of
        // it): the shape is deterministic when one of a few runs of qemu prints its steps.
        let tries = [qemu];
        while (tries.at(-1) !== expected(shape.steps) && tries.length < 4) tries = [...tries, collapseRepeats(twins.run(version, files, ['commit', '-p', ...(shape.args ?? []), 't.qcow2']).qemu.stdout)];
        assert.equal(tries.at(-1), expected(shape.steps), `${label}: qemu's output (the shape is deterministic; runs: ${JSON.stringify(tries)})`);
      } else {
        const all = everyStep(shape.of ?? 1);
        assert.equal(instar, expected(all), `${label}: instar prints every step`);
        const extra = middle(qemu).filter((p) => !all.includes(p));
        assert.deepEqual(extra, [], `${label}: qemu printed steps instar's operations cannot give (${qemu})`);
      }
    }
  });
});
