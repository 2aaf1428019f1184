// Shared by the dd and bench tests: one command line run by a qemu-img oracle and by instar, either
// in this process (--sandbox=none: the bulk of the cases, no Node start each) or as the built CLI
// with its default sandbox (a few cases each, so the real guest path is tested too).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runCommandLine } from '../../src/cli/run.ts';

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The oracle, its own path in its messages replaced by 'qemu-img' (10.0's try-help line names argv[0]). */
export function qemuRun(version: OracleVersion, args: string[], cwd?: string): RunResult {
  const r = runQemu(version, args, { cwd, timeoutMs: 60_000 });
  r.stderr = r.stderr.split(oracle(version)).join('qemu-img');
  return r;
}

/** instar with the version's profile: in-process unless `sandboxed` (then the built CLI, default sandbox). */
export async function instarRun(version: OracleVersion, args: string[], opts: { sandboxed?: boolean; cwd?: string } = {}): Promise<RunResult> {
  if (opts.sandboxed) return runInstar(['--qemu-version', version, ...args], { cwd: opts.cwd, timeoutMs: 60_000 });
  let stdout = '';
  let stderr = '';
  const status = await runCommandLine(['--qemu-version', version, '--sandbox=none', ...args], {
    out: (t) => void (stdout += t),
    err: (t) => void (stderr += t),
    env: process.env,
    cwd: opts.cwd ?? process.cwd(),
    argv1: '/usr/bin/qemu-img',
  });
  return { stdout, stderr, status, signal: null };
}
