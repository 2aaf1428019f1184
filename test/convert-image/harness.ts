// Shared pieces of the convert -O <format> tests: a scratch directory with one subdirectory per
// tool (so that the target has the same name in every message), and one call that runs instar
// and both oracles with the same arguments and compares status, stdout, stderr and the files.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS, type OracleVersion, type RunResult } from '../helpers/oracles.ts';

export interface Scratch {
  dir: string;
  cleanup(): void;
}

export function scratch(): Scratch {
  const dir = mkdtempSync(join(tmpdir(), 'instar-convert-image-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function qemu(args: string[], cwd?: string, version: OracleVersion = '10.0', tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): string {
  const r = runQemu(version, args, { timeoutMs: 60_000, cwd }, tool);
  if (r.status !== 0) throw new Error(`${tool} ${version} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

export type Tool = 'instar' | OracleVersion;

/** A fresh, empty subdirectory of `base` for one tool's run (sources are named as `../name`). */
function runDir(base: string, tool: Tool, label: string): string {
  const dir = join(base, `${label}-${tool}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  return dir;
}

/** The files a run left in its directory, by name. */
function filesIn(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).sort().map((name) => [name, readFileSync(join(dir, name))]));
}

export interface RunOutcome {
  result: RunResult;
  files: Map<string, Buffer>;
  dir: string;
}

export function runTool(tool: Tool, base: string, label: string, args: string[], sandbox = false): RunOutcome {
  const dir = runDir(base, tool, label);
  const result = tool === 'instar'
    ? runInstar([...(sandbox ? [] : ['--sandbox=none']), ...args], { cwd: dir, timeoutMs: 60_000 })
    : runQemu(tool, args, { cwd: dir, timeoutMs: 60_000 });
  return { result, files: filesIn(dir), dir };
}

export interface CompareOptions {
  /** Run instar through the real sandbox (default: in-process, --sandbox=none). */
  sandbox?: boolean;
  /** Compare the files byte for byte (default true). */
  files?: boolean;
  /** Names the runs' directories. */
  label: string;
  /**
   * The profiles instar runs under (default both). Each oracle runs anyway: instar's messages are
   * compared with the oracle of its profile, its files with every oracle's (they write the same).
   */
  profiles?: readonly OracleVersion[];
  /** Global options for instar alone (e.g. --allow-path for files outside the run directory). */
  instarOptions?: string[];
}

/**
 * Runs both oracles and instar under the `profiles` asked; asserts the same status, stdout,
 * stderr and (unless `files` is false) the same files, byte for byte. Returns instar's outcomes.
 */
export function sameAsOracles(base: string, args: string[], o: CompareOptions): RunOutcome[] {
  const theirs = new Map(VERSIONS.map((v) => [v, runTool(v, base, `${o.label}-${v}`, args)]));
  const outcomes: RunOutcome[] = [];
  for (const version of o.profiles ?? VERSIONS) {
    const ours = runTool('instar', base, `${o.label}-${version}`, [`--qemu-version=${version}`, ...(o.instarOptions ?? []), ...args], o.sandbox);
    assertLikeOracles(ours, theirs, version, args, o);
    outcomes.push(ours);
  }
  return outcomes;
}

/** instar's outcome under profile `version`: its messages and status as that oracle's, its files as every oracle's. */
export function assertLikeOracles(ours: RunOutcome, theirs: Map<OracleVersion, RunOutcome>, version: OracleVersion, args: string[], o: CompareOptions): void {
  const oracle = theirs.get(version)!;
  const what = `${o.label} (qemu ${version}): ${args.join(' ')}`;
  assert.equal(ours.result.stderr, oracle.result.stderr, `stderr of ${what}`);
  assert.equal(ours.result.stdout, oracle.result.stdout, `stdout of ${what}`);
  assert.equal(ours.result.status, oracle.result.status, `status of ${what}`);
  if (o.files !== false) {
    for (const [v, t] of theirs) {
      assert.deepEqual([...ours.files.keys()], [...t.files.keys()], `files of ${what} (against ${v})`);
      for (const [name, bytes] of t.files) assert.ok(bytes.equals(ours.files.get(name)!), `${name} differs from qemu ${v}'s: ${what}`);
    }
  }
}

export const exists = (path: string): boolean => existsSync(path);
