// One place that knows where the qemu-img oracles and the built instar CLI are.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const VERSIONS = ['7.2', '10.0'] as const;
export type OracleVersion = (typeof VERSIONS)[number];

const BIN_DIRS: Record<OracleVersion, string> = {
  '7.2': '/usr/bin',
  '10.0': join(ROOT, '.oracles', 'qemu-10.0', 'usr', 'bin'),
};

/** Path of an oracle tool; a missing oracle is a test failure, never a skip. */
export function oracle(version: OracleVersion, tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): string {
  const path = join(BIN_DIRS[version], tool);
  if (!existsSync(path)) throw new Error(`oracle ${tool} ${version} missing at ${path}: run scripts/install-oracles.sh`);
  return path;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  status: number | null;
  signal: NodeJS.Signals | null;
}

export interface RunOpts {
  cwd?: string;
  env?: Record<string, string>;
  input?: string | Buffer;
  timeoutMs?: number;
}

function run(file: string, args: string[], opts: RunOpts = {}): RunResult {
  const r = spawnSync(file, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    input: opts.input,
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 60_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw r.error;
  return { stdout: r.stdout ?? '', stderr: r.stderr ?? '', status: r.status, signal: r.signal };
}

/** Runs a qemu-img oracle (or qemu-io); hostile images must pass a timeout. */
export function runQemu(version: OracleVersion, args: string[], opts: RunOpts = {}, tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): RunResult {
  return run(oracle(version, tool), args, opts);
}

/** The built CLI; `alias` runs it under the name qemu-img so that messages say "qemu-img:". */
export const INSTAR_CLI = join(ROOT, 'dist', 'cli.js');
export const INSTAR_ALIAS = join(ROOT, 'dist', 'alias', 'qemu-img');

/** Runs the built instar CLI (under the qemu-img alias, so stderr is comparable byte for byte). */
export function runInstar(args: string[], opts: RunOpts & { alias?: boolean } = {}): RunResult {
  const script = opts.alias === false ? INSTAR_CLI : INSTAR_ALIAS;
  return run(process.execPath, [script, ...args], opts);
}

/**
 * qemu-img 7.2's PBKDF2 benchmark (LUKS create, measure, amend) fails at random on this machine
 * ("Unable to get accurate CPU usage", FACTS.md; 13 of 20 runs of one create on a quiet machine):
 * such a run says nothing about what qemu would print, so it is made again.
 */
export const PBKDF_FLAKE = 'Unable to get accurate CPU usage';
const PBKDF_RETRIES = 30;

/** `once()`, run again (up to 30 times) while its stderr shows qemu's PBKDF2 flake. */
export function retryingPbkdfFlake<T extends { stderr: string }>(once: () => T): T {
  let r = once();
  for (let i = 0; i < PBKDF_RETRIES && r.stderr.includes(PBKDF_FLAKE); i++) r = once();
  return r;
}

/** retryingPbkdfFlake for a run that is awaited. */
export async function retryingPbkdfFlakeAsync<T extends { stderr: string }>(once: () => Promise<T>): Promise<T> {
  let r = await once();
  for (let i = 0; i < PBKDF_RETRIES && r.stderr.includes(PBKDF_FLAKE); i++) r = await once();
  return r;
}
