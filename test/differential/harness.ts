// The differential harness: builds images with the real qemu tools at test time, runs the same
// command through instar and through qemu-img of each version, and compares stdout, exit status
// and (where qemu's is stable) stderr byte for byte.
//
// instar runs in the image directory with relative names, as the oracles do, with
// `--qemu-version V` so it prints what qemu-img V prints. INSTAR_TEST_SANDBOX=1 runs instar in its
// sandbox (the default mode) instead of `--sandbox=none`.
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { INSTAR_ALIAS, oracle, PBKDF_FLAKE, runQemu, VERSIONS, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { unifiedDiff } from './diff.ts';
import { runInProcess } from '../helpers/in-process.ts';

export const SANDBOXED = process.env.INSTAR_TEST_SANDBOX === '1';

/** A temporary directory of images, built with the oracle tools (7.2 unless said otherwise). */
export class ImageDir {
  readonly dir: string;

  constructor(prefix: string) {
    this.dir = mkdtempSync(join(tmpdir(), `instar-${prefix}-`));
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  mkdir(name: string): void {
    mkdirSync(this.path(name), { recursive: true });
  }

  /** Runs qemu-img (or qemu-io) in the directory; a failure stops the test with its stderr. */
  qemu(args: string[], opts: { tool?: 'qemu-img' | 'qemu-io'; version?: OracleVersion; retries?: number } = {}): RunResult {
    const attempts = 1 + (opts.retries ?? 0);
    let r: RunResult | undefined;
    for (let n = 0, flaky = 0; n < attempts; n++) {
      r = runQemu(opts.version ?? '7.2', args, { cwd: this.dir, env: { TZ: 'UTC' } }, opts.tool ?? 'qemu-img');
      if (r.status === 0) return r;
      // qemu's LUKS key-slot timing fails at random on this machine (FACTS.md): always worth a retry.
      if (r.stderr.includes(PBKDF_FLAKE) && flaky++ < 30) n--;
    }
    throw new Error(`${opts.tool ?? 'qemu-img'} ${args.join(' ')} failed (${r?.status}): ${r?.stderr}`);
  }

  /** Creates (or replaces) a sparse file of `size` bytes. */
  sparse(name: string, size: number): void {
    const fd = openSync(this.path(name), 'w');
    try {
      ftruncateSync(fd, size);
    } finally {
      closeSync(fd);
    }
  }

  img(...args: string[]): RunResult {
    return this.qemu(args);
  }

  io(...args: string[]): RunResult {
    return this.qemu(args, { tool: 'qemu-io' });
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface CompareOptions {
  /** Versions to compare against (both by default). */
  versions?: readonly OracleVersion[];
  /** Compare stderr too (default true); off where qemu's stderr has unstable text. */
  stderr?: boolean;
  /** Extra instar-only arguments (e.g. --unsafe-quirks). */
  instarArgs?: string[];
  /** Environment for both sides (TZ=UTC unless given: snapshot dates are local time). */
  env?: Record<string, string>;
  /** Run instar in its sandbox (default: INSTAR_TEST_SANDBOX=1). */
  sandboxed?: boolean;
}

/** qemu 10.0 names itself by the path it was started with in "Try '...'" hints. */
function normaliseStderr(text: string, version: OracleVersion): string {
  return text.split(oracle(version)).join('qemu-img');
}

/** Like the helpers' runners, but asynchronous, so both sides and both versions run at once. */
function runAsync(file: string, args: string[], cwd: string, env: Record<string, string>): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const e = error as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals }) | null;
      const status = e === null ? 0 : typeof e.code === 'number' ? e.code : null;
      resolve({ stdout, stderr, status, signal: e?.signal ?? null });
    });
  });
}

/**
 * Unsandboxed, instar's side runs in this process (the CLI's runCommandLine, as the built CLI
 * runs it with --sandbox=none) rather than as a new Node process per case: the launch was most of
 * every differential file's time (measure/cli.test.ts: 27 s -> 4 s). INSTAR_TEST_CLI=1 launches
 * the built CLI for every case instead; tests of the CLI and the sandbox launch it themselves.
 */
const IN_PROCESS = process.env.INSTAR_TEST_CLI !== '1';
// Snapshot dates print in local time: UTC here as for the processes of both sides.
if (IN_PROCESS) process.env.TZ = 'UTC';
let inProcessQueue: Promise<unknown> = Promise.resolve();
/** runInProcess changes the process's cwd: one at a time. */
function inProcessSerially(args: string[], dir: string): Promise<RunResult> {
  const next = inProcessQueue.then(() => runInProcess(args, dir));
  inProcessQueue = next.catch(() => undefined);
  return next;
}

/** Runs one command through both sides for each version; returns a description of every difference. */
export async function differences(dir: string, args: string[], opts: CompareOptions = {}): Promise<string[]> {
  const env = { TZ: 'UTC', ...opts.env };
  const sandbox = (opts.sandboxed ?? SANDBOXED) ? [] : ['--sandbox=none'];
  // Commands that write files must not run side by side on the same target (qemu's file locks).
  const serial = WRITING_COMMANDS.has(args[0]);
  const both = async <A, B>(a: () => Promise<A>, b: () => Promise<B>): Promise<[A, B]> =>
    serial ? [await a(), await b()] : Promise.all([a(), b()]);
  const compareVersion = async (version: OracleVersion) => {
    const instarArgs = [INSTAR_ALIAS, ...args, ...(opts.instarArgs ?? []), '--qemu-version', version, ...sandbox];
    const runInstarSide = IN_PROCESS && sandbox.length > 0 && env.TZ === 'UTC' && Object.keys(env).length === 1
      ? () => inProcessSerially([...args, ...(opts.instarArgs ?? []), '--qemu-version', version, ...sandbox], dir)
      : () => runAsync(process.execPath, instarArgs, dir, env);
    const [expected, actual] = await both(() => runAsync(oracle(version), args, dir, env), runInstarSide);
    const problems: string[] = [];
    const label = `qemu-img ${version} ${args.join(' ')}`;
    if (actual.stdout !== expected.stdout) {
      problems.push(`${label}: stdout differs\n${unifiedDiff(expected.stdout, actual.stdout, `qemu-img ${version}`, 'instar')}`);
    }
    if (actual.status !== expected.status) {
      problems.push(`${label}: exit status ${actual.status} (signal ${actual.signal}), qemu-img ${expected.status}\ninstar stderr: ${actual.stderr}`);
    }
    const wantErr = normaliseStderr(expected.stderr, version);
    if ((opts.stderr ?? true) && actual.stderr !== wantErr) {
      problems.push(`${label}: stderr differs\n${unifiedDiff(wantErr, actual.stderr, `qemu-img ${version}`, 'instar')}`);
    }
    return problems;
  };
  const versions = opts.versions ?? VERSIONS;
  if (!serial) return (await Promise.all(versions.map(compareVersion))).flat();
  const problems: string[] = [];
  for (const version of versions) problems.push(...(await compareVersion(version)));
  return problems;
}

const WRITING_COMMANDS = new Set(['amend', 'bitmap', 'commit', 'convert', 'create', 'dd', 'rebase', 'resize', 'snapshot']);

/** Throws with every difference (and its diff) when instar and qemu-img disagree. */
export async function assertSameOutput(dir: string, args: string[], opts: CompareOptions = {}): Promise<void> {
  const problems = await differences(dir, args, opts);
  if (problems.length > 0) throw new Error(problems.join('\n\n'));
}
