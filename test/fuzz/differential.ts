// Differential fuzzing: a mutant of a valid seed image (the same mutants as the in-process
// campaign: case i of campaign c) goes through qemu-img and through the built instar CLI with the
// same command line — info, map, compare with itself, convert -O raw — and every difference in
// stdout, exit status or converted content that the classifier (diff-classify.ts) does not
// explain is a finding, saved with what rebuilds it (campaign, index) and the mutant itself.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Rng, caseSeed } from './prng.ts';
import { buildCase } from './campaign.ts';
import { SEED_FILE, type Seed } from './seeds.ts';
import { hashFile, runInstarCli, runQemuLimited, type InstarMode, type ToolResult } from './diff-tools.ts';
import { BOTH_SLOW, explain, type CommandRun } from './diff-classify.ts';
import type { OracleVersion } from '../helpers/oracles.ts';

export const DIFF_FINDINGS = join(dirname(fileURLToPath(import.meta.url)), 'differential-findings');
/** convert is skipped above this virtual size (qemu-img's answer): hashing must stay cheap. */
const CONVERT_MAX_BYTES = 64 * 1024 * 1024;
/** Share of cases run through instar's default sandbox (the rest use --sandbox=none). */
export const SANDBOXED_SHARE = 0.1;
/** Share of cases run with --unsafe-quirks (qemu-img's raw fallback): no default-mode excuses. */
const UNSAFE_QUIRKS_SHARE = 0.25;

export interface DiffCase {
  campaign: number;
  index: number;
  seed: Seed;
  bytes: Buffer;
  /** -f for both sides; undefined: both probe. */
  format?: string;
  mode: InstarMode;
}

/** Case `index` of campaign `campaign`: the mutant of the in-process campaign, plus a mode. */
export function buildDiffCase(seeds: Seed[], campaign: number, index: number): DiffCase {
  const { seed, input } = buildCase(seeds, campaign, index);
  const rng = new Rng(caseSeed(campaign ^ 0x5bd1e995, index));
  const version: OracleVersion = rng.chance(0.5) ? '10.0' : '7.2';
  const mode = { version, sandboxed: rng.chance(SANDBOXED_SHARE), unsafeQuirks: rng.chance(UNSAFE_QUIRKS_SHARE) };
  return { campaign, index, seed, bytes: input.bytes, format: input.driver, mode };
}

export interface Difference {
  command: string;
  what: 'stdout' | 'status' | 'content' | 'instar-hang';
  detail: string;
  /** The classifier rule that explains it; absent for a finding. */
  rule?: string;
}

export interface DiffCaseResult {
  differences: Difference[];
  findings: Difference[];
  /** Commands whose two answers were identical. */
  agreed: number;
  ms: number;
}

/** Writes a file as qemu-img writes images: zero 4 KiB blocks as holes (the first block always
 *  written), so qemu's SEEK_DATA and instar's zero-block reading see the same holes (README). */
export function writeSparse(path: string, bytes: Buffer): void {
  const fd = openSync(path, 'w');
  try {
    for (let at = 0; at < bytes.length; at += 4096) {
      const block = bytes.subarray(at, Math.min(at + 4096, bytes.length));
      if (at === 0 || block.some((b) => b !== 0)) writeSync(fd, block, 0, block.length, at);
    }
    ftruncateSync(fd, bytes.length);
    // Allocate now: ext4 adds extent-tree blocks at writeback, which would change st_blocks
    // (info's actual-size) between qemu's run and instar's.
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

const firstLine = (t: string) => t.split('\n').find((l) => l.trim() !== '') ?? '';
const clip = (t: string, n = 600) => (t.length > n ? t.slice(0, n) + '…' : t);

/** The first line where two outputs differ, with its neighbour lines. */
function lineDiff(a: string, b: string): string {
  const x = a.split('\n');
  const y = b.split('\n');
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) i++;
  return `line ${i + 1}:\n- qemu:   ${clip(x.slice(i, i + 2).join('\n'), 400)}\n+ instar: ${clip(y.slice(i, i + 2).join('\n'), 400)}`;
}

function describeRun(t: ToolResult): string {
  return `status ${t.status}${t.signal ? ` signal ${t.signal}` : ''}${t.timedOut ? ' (timed out)' : ''}, stderr: ${clip(firstLine(t.stderr), 300)}`;
}

/** Compares one command's two runs; differences come back classified. */
function compareRuns(run: CommandRun, hashes?: { qemu?: string; instar?: string }): Difference[] {
  const out: Difference[] = [];
  const { command, qemu, instar } = run;
  if (instar.timedOut) {
    const hang: Difference = { command, what: 'instar-hang', detail: `instar ran over its timeout; qemu: ${describeRun(qemu)}` };
    return [BOTH_SLOW.applies(run) ? { ...hang, rule: BOTH_SLOW.name } : hang];
  }
  if (qemu.status !== instar.status) out.push({ command, what: 'status', detail: `qemu ${describeRun(qemu)}\ninstar ${describeRun(instar)}` });
  if (qemu.stdout !== instar.stdout) out.push({ command, what: 'stdout', detail: `${lineDiff(qemu.stdout, instar.stdout)}\nqemu ${describeRun(qemu)}\ninstar ${describeRun(instar)}` });
  if (hashes && qemu.status === 0 && instar.status === 0 && hashes.qemu !== hashes.instar) {
    out.push({ command, what: 'content', detail: `converted content: qemu ${hashes.qemu}, instar ${hashes.instar}` });
  }
  if (out.length === 0) return out;
  const rule = explain(run);
  return rule ? out.map((d) => ({ ...d, rule: rule.name })) : out;
}

/** Case directories in use, for an interrupted campaign to remove. */
const liveDirs = new Set<string>();
export function removeLiveDirs(): void {
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
}

/** Writes a case's files into `dir`: the mutant as SEED_FILE, its seed's companions beside it. */
export function materialize(c: DiffCase, dir: string): void {
  writeSparse(join(dir, SEED_FILE), c.bytes);
  for (const [name, bytes] of Object.entries(c.seed.companions ?? {})) writeSparse(join(dir, name), bytes);
}

/** The command lines of a case (relative names, run in the case's directory). */
function commands(c: DiffCase): [string, string[]][] {
  const f = c.format === undefined ? [] : ['-f', c.format];
  return [
    ['info', ['info', '--output=json', ...f, SEED_FILE]],
    ['map', ['map', '--output=json', ...f, SEED_FILE]],
    ['compare', ['compare', ...(c.format === undefined ? [] : ['-f', c.format, '-F', c.format]), SEED_FILE, SEED_FILE]],
  ];
}

/** Runs one case: both sides, every command, one after the other (qemu takes file locks). */
export async function runDiffCase(c: DiffCase, only?: string): Promise<DiffCaseResult> {
  const started = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'instar-dfuzz-'));
  liveDirs.add(dir);
  const result: DiffCaseResult = { differences: [], findings: [], agreed: 0, ms: 0 };
  const record = (diffs: Difference[]) => {
    if (diffs.length === 0) result.agreed++;
    result.differences.push(...diffs);
    result.findings.push(...diffs.filter((d) => d.rule === undefined));
  };
  try {
    materialize(c, dir);
    let virtualSize: number | undefined;
    for (const [command, args] of commands(c)) {
      if (only !== undefined && command !== only) continue;
      const qemu = await runQemuLimited(c.mode.version, args, dir);
      const instar = await runInstarCli(args, dir, c.mode);
      if (command === 'info' && qemu.status === 0) virtualSize = (JSON.parse(qemu.stdout) as { 'virtual-size'?: number })['virtual-size'];
      record(compareRuns({ command, format: c.format, unsafeQuirks: c.mode.unsafeQuirks, qemu, instar }));
    }
    if ((only === undefined || only === 'convert') && (virtualSize === undefined || virtualSize <= CONVERT_MAX_BYTES)) {
      const f = c.format === undefined ? [] : ['-f', c.format];
      const args = (out: string) => ['convert', ...f, '-O', 'raw', SEED_FILE, out];
      const qemu = await runQemuLimited(c.mode.version, args('out-qemu.raw'), dir);
      const instar = await runInstarCli(args('out-instar.raw'), dir, c.mode);
      const hash = (name: string) => (existsSync(join(dir, name)) ? hashFile(join(dir, name)) : 'missing');
      const hashes = { qemu: hash('out-qemu.raw'), instar: hash('out-instar.raw') };
      record(compareRuns({ command: 'convert', format: c.format, unsafeQuirks: c.mode.unsafeQuirks, qemu, instar }, hashes));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
  }
  result.ms = performance.now() - started;
  return result;
}

export interface DiffFinding {
  /** 'open' until fixed (replayed as TODO); 'fixed' ones must agree with qemu-img from then on. */
  status: 'open' | 'fixed';
  seed: string;
  campaign: number;
  index: number;
  format?: string;
  mode: InstarMode;
  command: string;
  what: Difference['what'];
  detail: string;
  /** What was found about it (triage). */
  note?: string;
  /** The mutant, gzip'd, base64. */
  image: string;
}

/**
 * The same difference on other mutants has the same signature: per driver (the seeds of one
 * format share their bugs), numbers, quoted names and the version-dependent "compressed" key blanked.
 */
export function diffSignature(driver: string, d: Difference): string {
  const gist = d.detail.split('\n').filter((l) => /status|stderr|^[-+] /.test(l)).join(' ');
  const blank = gist.replace(/"compressed": (true|false), /g, '').replace(/'[^']*'/g, 'Q').replace(/0x[0-9a-f]+|\d+/gi, 'N');
  return `${driver} ${d.command} ${d.what} ${blank.slice(0, 300)}`;
}

/** Saves a finding once per signature; returns its file name. */
export function saveDiffFinding(c: DiffCase, d: Difference): string {
  mkdirSync(DIFF_FINDINGS, { recursive: true });
  const id = createHash('sha256').update(diffSignature(c.seed.driver, d)).digest('hex').slice(0, 12);
  const file = `${c.seed.name}-${d.command}-${id}.json`;
  const path = join(DIFF_FINDINGS, file);
  if (!existsSync(path)) {
    const f: DiffFinding = { status: 'open', seed: c.seed.name, campaign: c.campaign, index: c.index, format: c.format, mode: c.mode, command: d.command, what: d.what, detail: d.detail, image: gzipSync(c.bytes, { level: 9 }).toString('base64') };
    writeFileSync(path, JSON.stringify(f, null, 1) + '\n');
  }
  return file;
}

export function loadDiffFindings(): (DiffFinding & { file: string })[] {
  if (!existsSync(DIFF_FINDINGS)) return [];
  return readdirSync(DIFF_FINDINGS)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ ...(JSON.parse(readFileSync(join(DIFF_FINDINGS, f), 'utf8')) as DiffFinding), file: f }));
}

/** A saved finding as a case again (its seed supplies the companion files). */
export function findingCase(f: DiffFinding, seeds: Seed[]): DiffCase {
  const seed = seeds.find((s) => s.name === f.seed);
  if (!seed) throw new Error(`finding names seed '${f.seed}', which seeds.ts no longer builds`);
  return { campaign: f.campaign, index: f.index, seed, bytes: gunzipSync(Buffer.from(f.image, 'base64')), format: f.format, mode: f.mode };
}
