// What a generative hunt area is (scripts/hunt.ts runs them): a function from a case seed and an
// empty directory to the commands it ran and the differences between instar and the oracles.
// Also the one comparison every area makes: the same command line through qemu-img (one oracle)
// and through the built instar CLI (--qemu-version of that oracle), stdout/stderr/status.
import { execFile } from 'node:child_process';
import { runInstarCli, type ToolResult } from '../diff-tools.ts';
import { oracle, type OracleVersion } from '../../helpers/oracles.ts';

const QEMU_TIMEOUT_MS = 120_000;

/**
 * qemu-img on a valid image: a timeout but no ulimit -v (the mutation fuzzer's runQemuLimited
 * has one, under which qemu 7.2 sometimes cannot start its threads: "qemu_thread_create").
 */
export function runQemu(version: OracleVersion, args: string[], cwd: string): Promise<ToolResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(oracle(version), args, { cwd, env: { ...process.env, TZ: 'UTC' }, encoding: 'utf8', timeout: QEMU_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const e = error as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals; killed?: boolean }) | null;
      const status = e === null ? 0 : typeof e.code === 'number' ? e.code : null;
      // qemu 10.0 names itself by its path in some messages.
      stderr = stderr.split(oracle(version)).join('qemu-img');
      resolve({ stdout, stderr, status, signal: e?.signal ?? null, timedOut: !!e?.killed, ms: performance.now() - started });
    });
  });
}

export interface Mismatch {
  /** The command line (without the program name), as run in the case directory. */
  command: string;
  version: OracleVersion;
  what: 'stdout' | 'stderr' | 'status' | 'file' | 'hang';
  qemu: string;
  instar: string;
}

export interface CaseReport {
  /** How the case's inputs were built (command lines). */
  recipe: string[];
  /** Commands compared. */
  commands: number;
  /** Of those, commands that failed on the oracle side (agreeing errors exercise less). */
  qemuFailed?: number;
  mismatches: Mismatch[];
}

export interface HuntArea {
  /** Runs case `seed` in the empty directory `dir` (left behind when something differed). */
  runCase(seed: number, dir: string): Promise<CaseReport>;
}

/** A text rewrite applied to both sides before comparing (random bytes qemu prints, say). */
export type Mask = (text: string) => string;

export interface Compared {
  qemu: ToolResult;
  instar: ToolResult;
  mismatches: Mismatch[];
}

/** Runs `args` through the oracle and instar in `cwd` at once; lists what differs. */
export async function compareRun(args: string[], cwd: string, version: OracleVersion, opts: { mask?: Mask; unsafeQuirks?: boolean; sandboxed?: boolean; allowPath?: string } = {}): Promise<Compared> {
  // qemu's node names (#blockNNN) count its nodes and vary from run to run.
  const nodeNames = (t: string) => t.replace(/#block\d+/g, '#blockN');
  const mask = (t: string) => nodeNames((opts.mask ?? ((x: string) => x))(t));
  const mode = { version, sandboxed: opts.sandboxed ?? false, unsafeQuirks: opts.unsafeQuirks ?? false };
  const instarArgs = opts.allowPath !== undefined ? ['--allow-path', opts.allowPath, ...args] : args;
  const [qemu, instar] = await Promise.all([runQemu(version, args, cwd), runInstarCli(instarArgs, cwd, mode)]);
  const command = args.join(' ');
  const mismatches: Mismatch[] = [];
  // Both out of time (a copy too large for the hunt's limit) is no difference.
  if (instar.timedOut && !qemu.timedOut) mismatches.push({ command, version, what: 'hang', qemu: `status ${qemu.status}`, instar: 'timed out' });
  // qemu 7.2 times PBKDF2 by thread CPU time and fails when a round took under one tick: a
  // timing flake of the oracle (10.0 retries), not behaviour to copy.
  else if (!qemu.timedOut && !qemu.stderr.includes('Unable to get accurate CPU usage')) {
    if (mask(qemu.stdout) !== mask(instar.stdout)) mismatches.push({ command, version, what: 'stdout', qemu: qemu.stdout, instar: instar.stdout });
    if (mask(qemu.stderr) !== mask(instar.stderr)) mismatches.push({ command, version, what: 'stderr', qemu: qemu.stderr, instar: instar.stderr });
    if (qemu.status !== instar.status) mismatches.push({ command, version, what: 'status', qemu: String(qemu.status), instar: String(instar.status) });
  }
  return { qemu, instar, mismatches };
}

/** A short unified-ish view of two texts: the first differing line of each, with its number. */
export function firstDifference(a: string, b: string): string {
  const la = a.split('\n');
  const lb = b.split('\n');
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) return `line ${i + 1}:\n  qemu:   ${JSON.stringify(la[i] ?? '<none>')}\n  instar: ${JSON.stringify(lb[i] ?? '<none>')}`;
  }
  return '(same text)';
}

/** What makes two mismatches the same finding: command name, what, and the differing line with
 *  its numbers blanked out. */
export function signature(m: Mismatch): string {
  const first = firstDifference(m.qemu, m.instar).split('\n').slice(1).map((l) => l.trim()).join(' ').replace(/\d+/g, 'N');
  return `${m.command.split(' ')[0]} ${m.what}: ${first}`;
}
