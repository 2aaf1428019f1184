// convert -n against both oracles: each tool runs in a directory of its own on a copy of the
// existing target (sources are named ../name); status, stdout, stderr and the target's bytes
// must be equal.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { prng } from '../helpers/xorshift.ts';

export interface IntoRun {
  result: RunResult;
  target: Buffer;
}

/** One tool's run of `qemu-img convert <args>` beside a copy of `base/target` (and of the `companions` it names: a parent). */
export async function runInto(base: string, tool: 'instar' | OracleVersion, version: OracleVersion, label: string, target: string, args: string[], sandbox = false, companions: string[] = []): Promise<IntoRun> {
  const dir = join(base, `${label}-${tool}-${version}`);
  mkdirSync(dir, { recursive: true });
  for (const file of [target, ...companions]) copyFileSync(join(base, file), join(dir, file));
  const argv = ['convert', ...args];
  let result: RunResult;
  if (tool !== 'instar') result = runQemu(tool, argv, { cwd: dir, timeoutMs: 60_000 });
  else if (sandbox) result = runInstar([`--qemu-version=${version}`, ...argv], { cwd: dir, timeoutMs: 60_000 });
  else result = await runInProcess(['--sandbox=none', `--qemu-version=${version}`, ...argv], dir);
  return { result, target: readFileSync(join(dir, target)) };
}

/**
 * instar and qemu-img (7.2 and 10.0) on copies of `target`: the same status, output and target
 * bytes (after `normalize`, for what qemu writes at random: a VMDK's CID); instar's runs.
 */
export async function sameInto(base: string, label: string, target: string, args: string[], sandbox = false, normalize: (file: Buffer) => Buffer = (f) => f, companions: string[] = []): Promise<IntoRun[]> {
  const mine: IntoRun[] = [];
  for (const version of VERSIONS) {
    const theirs = await runInto(base, version, version, label, target, args, false, companions);
    const ours = await runInto(base, 'instar', version, label, target, args, sandbox, companions);
    const show = (r: RunResult) => [r.status, r.stdout, r.stderr];
    assert.deepEqual(show(ours.result), show(theirs.result), `${label} (${version}): status and output of convert ${args.join(' ')}`);
    assert.ok(normalize(ours.target).equals(normalize(theirs.target)), `${label} (${version}): the target differs from qemu-img's`);
    mine.push(ours);
  }
  return mine;
}

/** The into tests' 3 MiB source disk: zeros with seeded random runs at its start, middle and last sector. */
export function sourceDisk(seed: number): Buffer {
  const MiB = 1024 * 1024;
  const disk = Buffer.alloc(3 * MiB);
  const next = prng(seed);
  for (const [offset, length] of [[4096, 8192], [MiB + 100000, 5000], [3 * MiB - 512, 512]]) for (let i = 0; i < length; i++) disk[offset + i] = next() & 0xff;
  return disk;
}
