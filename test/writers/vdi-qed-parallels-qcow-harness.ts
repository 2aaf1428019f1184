// Shared pieces of the convert -O / dd -O tests for vdi, qed, parallels and qcow: one case runs
// both oracles and instar (in-process, or once in a while through the real sandbox) with the same
// arguments, each in its own directory with the target named alike; it compares status, stdout
// and stderr with the oracle of instar's profile, the files (masked where qemu randomises) with
// both oracles', where the files have data, and what the oracle's `check` and `compare` print.
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { INSTAR_ALIAS, oracle, runInstar, runQemu, VERSIONS, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runCommandLine } from '../../src/cli/run.ts';
import { dataMap, firstDifference } from './vpc-vmdk-harness.ts';

export interface WriterCase {
  /** Names the case's directories. */
  label: string;
  /** The command line; `OUT` stands for the target's path (the same name in every run's directory). */
  args: string[];
  /** instar's profile; its messages are compared with this oracle's. */
  version: OracleVersion;
  sandboxed?: boolean;
  /** The target's format and, to run `compare` on the result, the source's path and format. */
  format: string;
  compareWith?: { path: string; format: string };
  /** Global options for instar alone (e.g. --allow-path for a backing file outside the target's directory). */
  instarArgs?: string[];
}

/** qemu-img check has nothing for these formats ("This image format does not support checks"). */
const UNCHECKED = new Set(['qcow']);

/** instar's command line in this process (as --sandbox=none runs it, without a process start). */
export async function inProcess(args: string[]): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const status = await runCommandLine(args, { out: (t) => (stdout += t), err: (t) => (stderr += t), env: process.env, cwd: process.cwd(), argv1: INSTAR_ALIAS });
  return { stdout, stderr, status, signal: null };
}

/** The files a run left, by name. */
function filesIn(dir: string): Map<string, string> {
  return new Map(readdirSync(dir).sort().map((name) => [name, join(dir, name)]));
}

const shown = (r: RunResult, dir: string, version: OracleVersion) =>
  `status ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr.split(oracle(version)).join('qemu-img')}`.split(dir).join('DIR');

/** Runs one case; the differences found, as text (empty: instar behaved as both oracles). */
export async function runWriterCase(base: string, c: WriterCase, mask: (file: Buffer) => Buffer): Promise<string[]> {
  const problems: string[] = [];
  const dirOf = (tool: string) => {
    const dir = join(base, `${c.label.replace(/[^A-Za-z0-9]+/g, '_')}-${tool}`);
    mkdirSync(dir);
    return dir;
  };
  const argsIn = (dir: string) => c.args.map((a) => a.split('OUT').join(join(dir, `out.${c.format}`)));
  const theirs = new Map(VERSIONS.map((v) => {
    const dir = dirOf(v);
    return [v, { dir, result: runQemu(v, argsIn(dir), { timeoutMs: 60_000 }) }];
  }));
  const mine = dirOf('instar');
  const cli = [...argsIn(mine), '--qemu-version', c.version, ...(c.instarArgs ?? [])];
  const result = c.sandboxed ? runInstar(cli, { timeoutMs: 60_000 }) : await inProcess([...cli, '--sandbox=none']);
  const oracleRun = theirs.get(c.version)!;
  const [a, b] = [shown(result, mine, c.version), shown(oracleRun.result, oracleRun.dir, c.version)];
  if (a !== b) problems.push(`${c.label}: instar printed\n${a}\nqemu ${c.version} printed\n${b}`);
  const myFiles = filesIn(mine);
  for (const [v, t] of theirs) {
    const files = filesIn(t.dir);
    if ([...files.keys()].join() !== [...myFiles.keys()].join()) {
      problems.push(`${c.label}: instar left [${[...myFiles.keys()]}], qemu ${v} [${[...files.keys()]}]`);
      continue;
    }
    for (const [name, path] of files) {
      const label = `${c.label} ${name} vs ${v}`;
      const [a, b] = [mask(readFileSync(myFiles.get(name)!)), mask(readFileSync(path))];
      // firstDifference walks byte by byte: only where the files differ.
      if (!a.equals(b)) problems.push(...firstDifference(a, b, label), `${label}: instar's file is ${a.length} bytes, qemu's ${b.length}`);
      if (v === c.version && dataMap(myFiles.get(name)!) !== dataMap(path)) {
        problems.push(`${label}: instar's file has data at ${dataMap(myFiles.get(name)!)}, qemu's at ${dataMap(path)}`);
      }
    }
  }
  const out = myFiles.get(`out.${c.format}`);
  if (result.status === 0 && out && !UNCHECKED.has(c.format)) {
    const check = runQemu(c.version, ['check', '-f', c.format, out]);
    if (check.status !== 0 || !check.stdout.includes('No errors were found')) problems.push(`${c.label}: check: ${check.stdout}${check.stderr}`);
  }
  if (out && c.compareWith) {
    const cmp = runQemu(c.version, ['compare', '-f', c.compareWith.format, '-F', c.format, c.compareWith.path, out]);
    if (cmp.status !== 0) problems.push(`${c.label}: compare: ${cmp.stdout}${cmp.stderr}`);
  }
  return problems;
}
