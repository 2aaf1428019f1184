// Shared by the dd and bench tests: one command line run by a qemu-img oracle and by instar, either
// in this process (--sandbox=none: the bulk of the cases, no Node start each) or as the built CLI
// with its default sandbox (a few cases each, so the real guest path is tested too).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runCommandLine } from '../../src/cli/run.ts';

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The oracle, its own path in its messages replaced by 'qemu-img' (10.0's try-help line names argv[0]). */
export function qemuRun(version: OracleVersion, args: string[], cwd?: string, tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): RunResult {
  const r = runQemu(version, args, { cwd, timeoutMs: 60_000 }, tool);
  r.stderr = r.stderr.split(oracle(version, tool)).join(tool);
  // Killed by a signal (bench's aborts): the status a shell reports, 128 + the signal, as instar exits.
  if (r.status === null && r.signal) r.status = 128 + constants.signals[r.signal];
  return r;
}

/** instar with the version's profile: in-process unless `sandboxed` (then the built CLI, default sandbox). */
export async function instarRun(version: OracleVersion, args: string[], opts: { sandboxed?: boolean; cwd?: string; globals?: string[] } = {}): Promise<RunResult> {
  if (opts.sandboxed) return runInstar(['--qemu-version', version, ...(opts.globals ?? []), ...args], { cwd: opts.cwd, timeoutMs: 60_000 });
  let stdout = '';
  let stderr = '';
  const status = await runCommandLine(['--qemu-version', version, '--sandbox=none', ...(opts.globals ?? []), ...args], {
    out: (t) => void (stdout += t),
    err: (t) => void (stderr += t),
    env: process.env,
    cwd: opts.cwd ?? process.cwd(),
    argv1: '/usr/bin/qemu-img',
  });
  return { stdout, stderr, status, signal: null };
}

/**
 * `dd args` by both, writing `out`: messages, exit status and the output file compared byte for
 * byte. `failedCopy`: qemu leaves a partly written output after a failed read, instar removes the
 * file it created (no half-written file that looks finished): then only its absence is checked.
 */
export async function sameDd(version: OracleVersion, args: string[], out: string, label: string, opts: { sandboxed?: boolean; failedCopy?: boolean } = {}): Promise<void> {
  const kept = `${out}.qemu`;
  rmSync(out, { force: true });
  rmSync(kept, { force: true });
  const q = qemuRun(version, ['dd', ...args]);
  if (existsSync(out)) renameSync(out, kept);
  const i = await instarRun(version, ['dd', ...args], { sandboxed: opts.sandboxed });
  assert.equal(i.stderr, q.stderr, `${label}: stderr`);
  assert.equal(i.stdout, q.stdout, `${label}: stdout`);
  assert.equal(i.status, q.status, `${label}: exit status`);
  if (opts.failedCopy) {
    assert.ok(existsSync(kept), `${label}: qemu left its output`);
    assert.ok(!existsSync(out), `${label}: instar removed its output`);
  } else {
    assert.equal(existsSync(out), existsSync(kept), `${label}: output made or not`);
    if (existsSync(kept)) assert.ok(readFileSync(out).equals(readFileSync(kept)), `${label}: output bytes`);
  }
  rmSync(out, { force: true });
  rmSync(kept, { force: true });
}
