// A differential harness for commands that create files: each side runs in its own copy of a
// template directory, so qemu-img and instar never see each other's output; then stdout, stderr,
// exit status, the directory listing and the bytes of every file are compared.
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { INSTAR_ALIAS, oracle, retryingPbkdfFlakeAsync, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runCommandLine } from '../../src/cli/run.ts';

export function runAsync(file: string, args: string[], cwd: string): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd, env: { ...process.env, TZ: 'UTC' }, encoding: 'utf8', timeout: 60_000 }, (error, stdout, stderr) => {
      const e = error as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals }) | null;
      resolve({ stdout, stderr, status: e === null ? 0 : typeof e.code === 'number' ? e.code : null, signal: e?.signal ?? null });
    });
  });
}

/** A fresh copy of `template` (a directory of inputs), removed by the caller. */
export function copyOf(template: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'instar-create-run-'));
  cpSync(template, dir, { recursive: true });
  return dir;
}

/** Every regular file under `dir` (relative names, sorted) with its bytes. */
export function snapshot(dir: string, prefix = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of readdirSync(join(dir, prefix)).sort()) {
    const rel = prefix === '' ? name : `${prefix}/${name}`;
    const st = statSync(join(dir, rel));
    if (st.isDirectory()) for (const [k, v] of snapshot(dir, rel)) out.set(k, v);
    else out.set(rel, readFileSync(join(dir, rel)));
  }
  return out;
}

export interface SideResult extends RunResult {
  files: Map<string, Buffer>;
}

/** In-process runs change the process's directory: one at a time. */
let inProcessQueue: Promise<unknown> = Promise.resolve();

/**
 * instar's command line in this process with --sandbox=none (no Node start: fast enough for many
 * cases), run in `dir`; the sandboxed cases go through the built CLI instead.
 */
function runInProcess(args: string[], dir: string): Promise<RunResult> {
  const run = async (): Promise<RunResult> => {
    let stdout = '';
    let stderr = '';
    const previous = process.cwd();
    process.chdir(dir);
    try {
      const status = await runCommandLine(args, { out: (t) => (stdout += t), err: (t) => (stderr += t), env: process.env, cwd: dir, argv1: INSTAR_ALIAS });
      return { stdout, stderr, status, signal: null };
    } finally {
      process.chdir(previous);
    }
  };
  const result = inProcessQueue.then(run, run);
  inProcessQueue = result.catch(() => undefined);
  return result;
}

/** Runs qemu-img of `version`, or instar emulating it, in a fresh copy of `template`. */
export async function runSide(side: 'qemu' | 'instar', version: OracleVersion, template: string, args: string[], sandboxed = false): Promise<SideResult> {
  if (side === 'instar') return runSideOnce(side, version, template, args, sandboxed);
  return retryingPbkdfFlakeAsync(() => runSideOnce(side, version, template, args, sandboxed));
}

async function runSideOnce(side: 'qemu' | 'instar', version: OracleVersion, template: string, args: string[], sandboxed: boolean): Promise<SideResult> {
  const dir = copyOf(template);
  try {
    const r = side === 'qemu'
      ? await runAsync(oracle(version), args, dir)
      : sandboxed
        ? await runAsync(process.execPath, [INSTAR_ALIAS, ...args, '--qemu-version', version], dir)
        : await runInProcess([...args, '--qemu-version', version, '--sandbox=none'], dir);
    return { ...r, stderr: r.stderr.split(oracle(version)).join('qemu-img'), files: snapshot(dir) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every difference between the two sides (empty when they agree byte for byte). */
export function compareSides(label: string, expected: SideResult, actual: SideResult): string[] {
  const problems: string[] = [];
  if (actual.stdout !== expected.stdout) problems.push(`${label}: stdout\n  qemu:   ${JSON.stringify(expected.stdout)}\n  instar: ${JSON.stringify(actual.stdout)}`);
  if (actual.stderr !== expected.stderr) problems.push(`${label}: stderr\n  qemu:   ${JSON.stringify(expected.stderr)}\n  instar: ${JSON.stringify(actual.stderr)}`);
  if (actual.status !== expected.status) problems.push(`${label}: exit ${actual.status}, qemu ${expected.status}`);
  const names = (m: Map<string, Buffer>) => [...m.keys()].join(' ');
  if (names(actual.files) !== names(expected.files)) problems.push(`${label}: files [${names(actual.files)}], qemu [${names(expected.files)}]`);
  for (const [name, bytes] of expected.files) {
    const mine = actual.files.get(name);
    if (mine && !mine.equals(bytes)) problems.push(`${label}: ${name} differs (${mine.length} bytes, qemu ${bytes.length})`);
  }
  return problems;
}

/** Runs `tasks` with at most `limit` at a time (two cores: keep the machine usable). */
export async function pool<T>(tasks: (() => Promise<T>)[], limit = 3): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}
