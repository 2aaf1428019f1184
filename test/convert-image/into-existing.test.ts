// convert -n -O qcow2 into an existing qcow2 image against qemu-img 7.2 and 10.0: each tool runs
// on its own copy of the target; status, stdout, stderr and the target's bytes must be equal.
// The targets hold data where the sources have zeros (qemu frees those clusters and makes them
// zero clusters), clusters the copy reuses, L1 entries without an L2 table, and clusters the
// sources cover in part. Then the crash test: the op stopped after each prefix of its writes
// leaves an image qemu-img opens and checks.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS, type RunResult } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { scratch, qemu, type Scratch } from './harness.ts';
import { everyPrefixOpens } from './into-crash.ts';
import { prng } from '../helpers/xorshift.ts';

let s: Scratch;
const at = (...names: string[]) => join(s.dir, ...names);
const MiB = 1024 * 1024;

/** A raw disk of `size` bytes with pseudo-random data at [offset, length) pieces. */
function rawDisk(name: string, size: number, pieces: [number, number][], seed: number): void {
  const disk = Buffer.alloc(size);
  const next = prng(seed);
  for (const [offset, length] of pieces) for (let i = 0; i < length; i++) disk[offset + i] = next() & 0xff;
  writeFileSync(at(name), disk);
}

/** A qcow2 image made by qemu-img create and filled by qemu-io. */
function qcow2(name: string, size: string, options: string, writes: string[]): void {
  qemu(['create', '-q', '-f', 'qcow2', ...(options ? ['-o', options] : []), at(name), size]);
  if (writes.length > 0) qemu(['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), at(name)], undefined, '10.0', 'qemu-io');
}

before(() => {
  s = scratch();
  rawDisk('src.raw', 4 * MiB, [[65536, 4096], [3 * MiB, 100000]], 1);
  rawDisk('src6.raw', 6 * MiB, [[8192, 4096], [5 * MiB, 10000]], 2);
  rawDisk('half.raw', 2 * MiB, [[0, 70000], [MiB + 4096, 4096]], 3);
  rawDisk('striped.raw', 8 * MiB, Array.from({ length: 512 }, (_, i): [number, number] => [i * 16384, 4096]), 4);
  qcow2('t64k.qcow2', '4M', '', ['write -P 0x11 0 256k', 'write -P 0x22 1M 64k']);
  qcow2('t4k.qcow2', '6M', 'cluster_size=4096', ['write -P 0x11 0 64k', 'write -P 0x22 2M 8k']);
  qcow2('t8m.qcow2', '8M', 'cluster_size=16384', ['write -P 0x33 0 1M', 'write -P 0x44 3M 512k', 'write -z 5M 64k', 'write -P 0x55 7M 1M']);
  qcow2('empty.qcow2', '4M', '', []);
  qcow2('rc64.qcow2', '8M', 'cluster_size=4096,refcount_bits=64', ['write -P 9 0 100k', 'write -P 8 6M 8k']);
  qcow2('s4k.qcow2', '4M', 'cluster_size=4096', ['write -P 0x66 4096 4096', 'write -P 0x67 100k 60k', 'write -P 0 2M 64k', 'write -P 0x68 3M 4k']);
  qcow2('base.qcow2', '4M', '', ['write -P 0x77 0 4M']);
  qcow2('backed.qcow2', '4M', 'backing_file=base.qcow2,backing_fmt=qcow2', ['write -P 0x11 0 64k']);
  qcow2('snap.qcow2', '4M', '', ['write -P 0x11 0 64k']);
  // Zeros stored as data in a source cluster (4 KiB) ending inside a 64 KiB target cluster that holds data.
  qcow2('zeros4k.qcow2', '4M', 'cluster_size=4096', ['write -P 0 0 4k', 'write -P 0 64k 6k', 'write -P 0x69 3M 4k']);
  qcow2('t5a.qcow2', '4M', '', ['write -P 0x5a 0 128k', 'write -P 0x5b 3M 64k']);
  // A raw file whose zeros are data (written, not holes) around data and a hole: qemu's block status says data there.
  const zerosAsData = Buffer.alloc(3 * MiB);
  zerosAsData.fill(0x42, MiB, MiB + 5000);
  writeFileSync(at('zeros-data.raw'), zerosAsData);
  qemu(['-f', 'raw', '-c', 'discard 2M 512k', at('zeros-data.raw')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', at('orphan.qcow2'), '4M']);
  qemu(['snapshot', '-c', 's1', at('snap.qcow2')]);
  // Disks ending inside a target cluster (1000000 bytes: whole sectors to 1000448), with data or
  // zeros up to their end, and targets whose cluster there holds data, a zero cluster or nothing.
  rawDisk('odd.raw', 1000000, [[0, 5000], [990000, 10000]], 5);
  rawDisk('odd-zero-end.raw', 1000000, [[0, 5000]], 6);
  qcow2('full5c.qcow2', '4M', '', ['write -P 0x5c 0 4M']);
  // A sparse raw file: data at 4 KiB, then a hole to its end (one zero run, not cut at 2 MiB).
  writeFileSync(at('hole.raw'), Buffer.alloc(8192, 0x3c).fill(0, 0, 4096));
  truncateSync(at('hole.raw'), 4 * MiB);
  qcow2('zero-tail.qcow2', '4M', '', ['write -P 0x5d 0 512k', 'write -z 960k 64k']);
});
after(() => s.cleanup());

interface Outcome {
  result: RunResult;
  target: Buffer;
}

/** Runs convert -n in a directory of its own on a copy of `target` (named t.qcow2); sources are ../name. */
async function runOn(tool: 'instar' | '7.2' | '10.0', label: string, target: string, args: string[], sandbox: boolean, version: string, companions: string[] = []): Promise<Outcome> {
  const dir = at(`${label}-${tool}-${version}`);
  mkdirSync(dir, { recursive: true });
  // Files the target names (its backing file) beside it, inside instar's default path policy.
  for (const name of companions) copyFileSync(at(name), join(dir, name));
  copyFileSync(at(target), join(dir, 't.qcow2'));
  const argv = ['convert', '-n', ...args, 't.qcow2'];
  let result: RunResult;
  if (tool !== 'instar') result = runQemu(tool, argv, { cwd: dir, timeoutMs: 60_000 });
  else if (sandbox) result = runInstar([`--qemu-version=${version}`, ...argv], { cwd: dir, timeoutMs: 60_000 });
  else result = await runInProcess(['--sandbox=none', `--qemu-version=${version}`, ...argv], dir);
  return { result, target: readFileSync(join(dir, 't.qcow2')) };
}

async function sameAsQemu(label: string, target: string, args: string[], sandbox = false, companions: string[] = []): Promise<void> {
  for (const version of VERSIONS) {
    const theirs = await runOn(version, label, target, args, false, version, companions);
    const mine = await runOn('instar', label, target, args, sandbox, version, companions);
    const show = (r: RunResult) => [r.status, r.stdout, r.stderr];
    assert.deepEqual(show(mine.result), show(theirs.result), `${label} (${version}): status and output`);
    assert.ok(mine.target.equals(theirs.target), `${label} (${version}): the target differs from qemu-img's`);
  }
}

const raw = (...names: string[]) => ['-f', 'raw', ...names.map((n) => `../${n}`)];

test('convert -n -O qcow2: data where the source has zeros is unmapped, freed clusters reused (sandboxed)', async () => {
  await sameAsQemu('64k', 't64k.qcow2', ['-O', 'qcow2', ...raw('src.raw')], true);
});

test('convert -n -O qcow2: 4 KiB clusters, an L1 entry without an L2 table, a larger source part', async () => {
  await sameAsQemu('4k', 't4k.qcow2', ['-O', 'qcow2', ...raw('src6.raw')]);
  // 512 allocations with 64-bit refcounts: the refcount block fills and a new one is allocated.
  await sameAsQemu('refcount-growth', 'rc64.qcow2', ['-O', 'qcow2', ...raw('striped.raw')]);
});

test('convert -n -O qcow2: a larger target (its end untouched), several sources, -S 0, --target-is-zero', async () => {
  await sameAsQemu('larger', 't8m.qcow2', ['-O', 'qcow2', ...raw('src6.raw')]);
  await sameAsQemu('two', 't8m.qcow2', ['-O', 'qcow2', ...raw('half.raw', 'src.raw')]);
  await sameAsQemu('S0', 't64k.qcow2', ['-O', 'qcow2', '-S', '0', ...raw('src.raw')]);
  await sameAsQemu('is-zero', 'empty.qcow2', ['-O', 'qcow2', '--target-is-zero', ...raw('src.raw')]);
});

test('convert -n -O qcow2 --target-is-zero into clusters holding data that the copy writes in part: the rest keeps the target\'s bytes', async () => {
  await sameAsQemu('is-zero-data', 't64k.qcow2', ['-O', 'qcow2', '--target-is-zero', ...raw('src.raw')]);
  await sameAsQemu('is-zero-4k', 't8m.qcow2', ['-O', 'qcow2', '--target-is-zero', '-S', '512', '-f', 'qcow2', '../s4k.qcow2']);
  // Over a backing file: an unallocated cluster written in part shows the backing file's bytes in the rest.
  await sameAsQemu('is-zero-backed', 'backed.qcow2', ['-O', 'qcow2', '--target-is-zero', ...raw('src.raw')], false, ['base.qcow2']);
});

test('convert -n -O qcow2: a zero run from inside a cluster, longer than 2 MiB, is one request (no data cluster where a 2 MiB cut would fall)', async () => {
  await sameAsQemu('zero-run', 'full5c.qcow2', ['-O', 'qcow2', ...raw('hole.raw')]);
});

test('convert -n -O qcow2 from a qcow2 source with 4 KiB clusters (runs that end inside target clusters)', async () => {
  await sameAsQemu('qcow2-src', 't8m.qcow2', ['-O', 'qcow2', '-f', 'qcow2', '../s4k.qcow2']);
  await sameAsQemu('qcow2-src-64k', 't64k.qcow2', ['-O', 'qcow2', '-f', 'qcow2', '../s4k.qcow2']);
});

test('convert -n -O qcow2: qemu\'s zero requests cut inside a cluster holding data (source runs of zeros stored as data): zeros written into it, not a zero cluster', async () => {
  await sameAsQemu('zero-cut', 't5a.qcow2', ['-O', 'qcow2', '-f', 'qcow2', '../zeros4k.qcow2']);
  await sameAsQemu('zero-cut-S', 't5a.qcow2', ['-O', 'qcow2', '-S', '512', '-f', 'qcow2', '../zeros4k.qcow2']);
});

test('convert -n -O qcow2 -p from a raw file whose zeros are allocated: its block status (the host\'s SEEK_DATA) decides the runs, as qemu\'s does', async () => {
  await sameAsQemu('zeros-data', 't5a.qcow2', ['-O', 'qcow2', '-p', ...raw('zeros-data.raw')]);
});

test('convert -n -O qcow2: sources ending inside a cluster of a larger target (the rest of it keeps the target\'s bytes)', async () => {
  for (const source of ['odd.raw', 'odd-zero-end.raw']) {
    for (const target of ['full5c.qcow2', 'zero-tail.qcow2', 'empty.qcow2', 't4k.qcow2']) {
      await sameAsQemu(`tail-${source}-${target}`, target, ['-O', 'qcow2', ...raw(source)]);
    }
  }
  await sameAsQemu('tail-S0', 'full5c.qcow2', ['-O', 'qcow2', '-S', '0', ...raw('odd-zero-end.raw')]);
});

test('convert -n -O qcow2 into a smaller target, a target whose backing file is missing: qemu\'s messages, nothing written', async () => {
  await sameAsQemu('smaller', 't64k.qcow2', ['-O', 'qcow2', ...raw('src6.raw')]);
  await sameAsQemu('orphan', 'orphan.qcow2', ['-O', 'qcow2', ...raw('src.raw')]);
});

test('convert -n -O qcow2 into a target with a backing file: zero clusters hide it where the source has zeros; -B', async () => {
  await sameAsQemu('backed', 'backed.qcow2', ['-O', 'qcow2', ...raw('src.raw')], false, ['base.qcow2']);
  // -B with a source without a backing file changes nothing (even without -F); with two sources, qemu's message.
  await sameAsQemu('B', 'backed.qcow2', ['-O', 'qcow2', '-B', 'base.qcow2', ...raw('src.raw')], false, ['base.qcow2']);
  await sameAsQemu('B-two', 't64k.qcow2', ['-O', 'qcow2', '-B', 'base.qcow2', ...raw('src.raw', 'half.raw')]);
});

test('convert -n into targets instar does not write: a clear refusal, nothing written', async () => {
  const cases: [string, string[], RegExp][] = [
    ['backed.qcow2', ['-O', 'qcow2', '-f', 'qcow2', '../s4k.qcow2'], /instar cannot convert into this qcow2 image \(the copy covers in part a cluster its backing file decides\)/],
    ['snap.qcow2', ['-O', 'qcow2', ...raw('src.raw')], /instar cannot convert into this qcow2 image \(it has internal snapshots\)/],
    ['t64k.qcow2', ['-O', 'qcow2', '-B', '../empty.qcow2', '-F', 'qcow2', '-f', 'qcow2', '../backed.qcow2'], /instar cannot convert into this qcow2 image \(with -B from a source that has a backing file\)/],
    ['t64k.qcow2', ['-O', 'qcow2', '-c', ...raw('src.raw')], /instar cannot convert into an existing qcow2 image \(-n\) with -c yet/],
  ];
  for (const [target, args, message] of cases) {
    const mine = await runOn('instar', 'refused', target, args, false, '10.0', ['base.qcow2']);
    assert.equal(mine.result.status, 1, `${target} ${args.join(' ')}`);
    assert.match(mine.result.stderr, message);
    assert.equal(mine.result.stderr.split('\n').length, 2, 'one line');
    assert.ok(mine.target.equals(readFileSync(at(target))), `${target}: the target was written`);
  }
});

test('convert -n stopped after each prefix of its writes leaves an image qemu-img opens and checks', () => {
  const k = everyPrefixOpens({ source: at('src6.raw'), target: at('t4k.qcow2'), format: 'qcow2', dir: s.dir, label: 'qcow2' }, 500);
  assert.ok(k > 5, `${k} writes`);
});
