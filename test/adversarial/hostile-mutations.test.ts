// The hostile images again, through the commands that WRITE: check -r all and commit on every
// case (commit writes into a base file the hostile image names), safe rebase onto nothing,
// snapshot -c, bitmap --add and resize on the qcow2 ones. Each on a fresh copy of the case's files, in this process
// (runCommandLine with --sandbox=none: what is tested here is the trusted side's path handling and
// the planners' bounds; hostile-images.test.ts covers the sandbox). For each run: an exit status
// qemu-img could give, no exception, no stack trace; after all of them: the decoy outside every
// case and every file a case targets (/etc/passwd and the like) are byte for byte what they were,
// and no case's files grew past a bound.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommandLine } from '../../src/cli/run.ts';
import { writeCaseFiles, type HostileCase } from './case.ts';
import { referenceCases } from './cases-references.ts';
import { structureCases } from './cases-structure.ts';
import { pool } from './traced-run.ts';
import { LONG } from '../helpers/long.ts';

// A run is synchronous in this process: a hang shows as the file's timeout, a slow run here.
const WALL_LIMIT_MS = 60_000;
const MAX_FILE_BYTES = 256 * 1024 * 1024;
const base = realpathSync(mkdtempSync(join(tmpdir(), 'instar-hostile-writes-')));
const outside = join(base, 'outside');
const casesDir = join(base, 'cases');
after(() => rmSync(base, { recursive: true, force: true }));

const isQcow2 = (c: HostileCase): boolean => {
  const top = c.files[c.top ?? 'top'];
  return Buffer.isBuffer(top) && top.subarray(0, 4).equals(Buffer.from('QFI\xfb', 'latin1'));
};

/**
 * The command lines each case runs (`top` is the case's image); `nth`: how many qcow2 cases came
 * before. Short tier: every case check -r all and commit (the write into a file the image names),
 * and one of the four qcow2 header and table writers in turn (each still on a quarter of the qcow2
 * cases of every kind, through the same open and planner bounds); long tier: all four on each.
 */
function commandLines(c: HostileCase, nth: number): string[][] {
  const top = c.top ?? 'top';
  const lines = [['check', '-r', 'all', top], ['commit', top]];
  const qcow2Writers = [['rebase', '-b', '', top], ['snapshot', '-c', 's1', top], ['bitmap', '--add', top, 'b1'], ['resize', top, '+1M']];
  if (isQcow2(c)) lines.push(...(LONG ? qcow2Writers : [qcow2Writers[nth % qcow2Writers.length]]));
  return lines;
}

let cases: HostileCase[] = [];
const hashes = new Map<string, string>();
const digest = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

before(() => {
  mkdirSync(outside);
  mkdirSync(casesDir);
  writeFileSync(join(outside, 'secret.raw'), Buffer.alloc(1048576, 0x53));
  cases = [...referenceCases({ outside }, casesDir.split('/').length), ...structureCases()];
  // Every regular file some case aims at, as it is before any run.
  for (const c of cases) {
    for (const t of c.targets) {
      if (hashes.has(t) || !existsSync(t) || /^\/(proc|sys|dev)\//.test(t)) continue;
      const st = statSync(t);
      if (st.isFile() && st.size < 64 * 1024 * 1024) hashes.set(t, digest(t));
    }
  }
  hashes.set(join(outside, 'secret.raw'), digest(join(outside, 'secret.raw')));
});

/** A fresh copy of the case's files in a directory of its own. */
function materialise(c: HostileCase, run: number): string {
  const dir = join(casesDir, `${c.name}-${run}`);
  mkdirSync(dir);
  writeCaseFiles(c, dir);
  return dir;
}

interface Outcome {
  label: string;
  /** null: an exception escaped the command. */
  status: number | null;
  stderr: string;
  ms: number;
}

async function runIn(dir: string, args: string[], label: string): Promise<Outcome> {
  const started = Date.now();
  let stderr = '';
  const io = { out: () => {}, err: (text: string) => (stderr += text.slice(0, 65536 - stderr.length)), env: { ...process.env }, cwd: dir, argv1: 'qemu-img' };
  try {
    // The image named by its full path (the commands' last operand but for bitmap's and resize's).
    const at = args[0] === 'bitmap' || args[0] === 'resize' ? args.length - 2 : args.length - 1;
    const line = args.map((a, i) => (i === at ? join(dir, a) : a));
    const status = await runCommandLine(args[0] === 'resize' ? ['--sandbox=none', ...line] : [...line, '--sandbox=none'], io);
    return { label, status, stderr, ms: Date.now() - started };
  } catch (e) {
    return { label, status: null, stderr: `${stderr}${e instanceof Error ? e.stack : String(e)}`, ms: Date.now() - started };
  }
}

test('writing commands on hostile images: clear answers, bounded, nothing outside the case touched', async () => {
  assert.ok(cases.length > 100, `the hostile cases (${cases.length})`);
  const jobs: (() => Promise<Outcome>)[] = [];
  let run = 0;
  let qcow2Cases = 0;
  for (const c of cases) {
    for (const args of commandLines(c, isQcow2(c) ? qcow2Cases++ : 0)) {
      const n = run++;
      jobs.push(() => runIn(materialise(c, n), args, `${c.name}: ${args.join(' ')}`));
    }
  }
  const outcomes = await pool(jobs, 1);
  const problems: string[] = [];
  const statuses = new Map<number, number>();
  for (const o of outcomes) {
    // 63: qemu-img check's "does not support checks".
    if (o.status === null || (o.status > 3 && o.status !== 63)) problems.push(`${o.label}: status ${o.status}: ${o.stderr.slice(0, 300)}`);
    else statuses.set(o.status, (statuses.get(o.status) ?? 0) + 1);
    if (/^\s+at /m.test(o.stderr) || /\b(TypeError|RangeError|ReferenceError|SyntaxError)\b/.test(o.stderr)) problems.push(`${o.label}: a stack trace: ${o.stderr.slice(0, 300)}`);
    if (o.ms >= WALL_LIMIT_MS) problems.push(`${o.label}: ${o.ms} ms`);
  }
  for (const [path, hash] of hashes) if (digest(path) !== hash) problems.push(`${path} changed`);
  if (readdirSync(outside).join() !== 'secret.raw') problems.push(`files appeared outside: ${readdirSync(outside).join(', ')}`);
  for (const dir of readdirSync(casesDir)) {
    for (const name of readdirSync(join(casesDir, dir))) {
      const st = statSync(join(casesDir, dir, name), { throwIfNoEntry: false });
      if (st && st.size > MAX_FILE_BYTES) problems.push(`${dir}/${name} grew to ${st.size} bytes`);
    }
  }
  assert.deepEqual(problems, []);
  // Most images are refused or fail to open; some are repaired or committed.
  assert.ok((statuses.get(1) ?? 0) > 0 && (statuses.get(0) ?? 0) > 0, `statuses: ${JSON.stringify([...statuses])}`);
});
