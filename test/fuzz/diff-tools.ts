// The two sides of a differential fuzz case as processes: qemu-img under the limits its hostile
// inputs need (FACTS.md: 7.2 loops and grows without bound on some chains), and the built instar
// CLI under the qemu-img alias, so that both print the same program name.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, cpSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { INSTAR_ALIAS, INSTAR_CLI, ROOT, oracle, type OracleVersion } from '../helpers/oracles.ts';

/** qemu-img's address-space limit (ulimit -v, KiB) and wall-clock limit. */
export const QEMU_ULIMIT_KIB = 1024 * 1024;
export const QEMU_TIMEOUT_S = 10;
/** instar has its own bounds (guest limits and watchdog); this only catches a hang. */
export const INSTAR_TIMEOUT_MS = 30_000;

export interface ToolResult {
  stdout: string;
  stderr: string;
  status: number | null;
  signal: string | null;
  /** Killed by our timeout (qemu: `timeout` exits 124, or 137 when it had to SIGKILL). */
  timedOut: boolean;
  ms: number;
}

function exec(file: string, args: string[], cwd: string, timeoutMs: number): Promise<ToolResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(file, args, { cwd, env: { ...process.env, TZ: 'UTC' }, encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const e = error as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals; killed?: boolean }) | null;
      const status = e === null ? 0 : typeof e.code === 'number' ? e.code : null;
      resolve({ stdout, stderr, status, signal: e?.signal ?? null, timedOut: !!e?.killed, ms: performance.now() - started });
    });
  });
}

/** qemu-img `args` in `cwd`, under `ulimit -v` and `timeout`. */
export async function runQemuLimited(version: OracleVersion, args: string[], cwd: string): Promise<ToolResult> {
  const script = `ulimit -v ${QEMU_ULIMIT_KIB} && exec timeout -k 2 ${QEMU_TIMEOUT_S} "$0" "$@"`;
  const r = await exec('/bin/sh', ['-c', script, oracle(version), ...args], cwd, (QEMU_TIMEOUT_S + 5) * 1000);
  // qemu 10.0 names itself by its path in some messages.
  r.stderr = r.stderr.split(oracle(version)).join('qemu-img');
  if (r.status === 124 || r.status === 137) r.timedOut = true;
  return r;
}

export interface InstarMode {
  version: OracleVersion;
  /** The default sandbox; otherwise --sandbox=none (in-process, for throughput). */
  sandboxed: boolean;
  /** --unsafe-quirks: qemu-img's raw fallback and LUKS2 refusal, where instar differs by default. */
  unsafeQuirks: boolean;
}

export function instarArgs(args: string[], mode: InstarMode): string[] {
  return [...args, '--qemu-version', mode.version, ...(mode.sandboxed ? [] : ['--sandbox=none']), ...(mode.unsafeQuirks ? ['--unsafe-quirks'] : [])];
}

let alias = INSTAR_ALIAS;

/**
 * Runs instar from a private copy of dist/ (returns a function that removes it): a long campaign
 * must not see another engineer's `npm run build` replace the bundle under it.
 */
export function useDistSnapshot(): () => void {
  // Inside node_modules/.cache, so that packages the bundle leaves external still resolve.
  const cache = join(ROOT, 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const dir = mkdtempSync(join(cache, 'instar-dfuzz-dist-'));
  cpSync(dirname(INSTAR_CLI), dir, { recursive: true, verbatimSymlinks: true });
  alias = join(dir, relative(dirname(INSTAR_CLI), INSTAR_ALIAS));
  return () => {
    alias = INSTAR_ALIAS;
    rmSync(dir, { recursive: true, force: true });
  };
}

/** The built instar CLI (npm run build) on `args` in `cwd`. */
export function runInstarCli(args: string[], cwd: string, mode: InstarMode): Promise<ToolResult> {
  return exec(process.execPath, [alias, ...instarArgs(args, mode)], cwd, INSTAR_TIMEOUT_MS);
}

/** sha256 and length of a file's content (convert outputs), read in 1 MiB pieces. */
export function hashFile(path: string): string {
  const h = createHash('sha256');
  const buf = Buffer.alloc(1024 * 1024);
  const fd = openSync(path, 'r');
  let total = 0;
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; total += n) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return `${h.digest('hex').slice(0, 16)}/${total}`;
}
