// `convert -O vhdx` through instar's command line (the convert pipeline with the VHDX writer)
// against qemu-img 7.2 and 10.0 on the same sources: the command's output and status, the file
// (random fields masked: vhdx-harness.ts), and what `info`, `check` and `compare` print; and
// `dd -O vhdx`, whose output the host opens write-only. One case
// through the real sandbox (the built CLI: run `npm run build` first), the rest in-process.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSTAR_ALIAS, oracle, runInstar, runQemu, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runCommandLine } from '../../src/cli/run.ts';
import { chainFiles, firstDifference, holesFile, read, sameOutput } from './vpc-vmdk-harness.ts';
import { maskVhdx } from './vhdx-harness.ts';

let dir = '';
const at = (name: string) => join(dir, name);
const sources = new Map<string, string>();

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-vhdx-cli-'));
  sources.set('holes', holesFile(at('holes.raw')));
  sources.set('chain', chainFiles(dir)[0]);
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function inProcess(args: string[]): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const status = await runCommandLine(args, { out: (t) => (stdout += t), err: (t) => (stderr += t), env: process.env, cwd: dir, argv1: INSTAR_ALIAS });
  return { stdout, stderr, status, signal: null };
}

function syncFile(path: string): void {
  const fd = openSync(path, 'r');
  fsyncSync(fd);
  closeSync(fd);
}

const CASES: { source: string; args: string[]; version: OracleVersion; sandboxed?: boolean }[] = [
  { source: 'chain', args: [], version: '10.0', sandboxed: true },
  { source: 'holes', args: ['-S', '0', '-o', 'block_size=1M'], version: '7.2' },
  { source: 'holes', args: ['-p', '-o', 'subformat=fixed'], version: '10.0' },
  { source: 'chain', args: ['-o', 'block_state_zero=off,log_size=3M'], version: '7.2' },
];

test('convert -O vhdx through the CLI: output, file, info, check and compare as qemu-img 7.2 and 10.0', async () => {
  const problems: string[] = [];
  for (const [n, c] of CASES.entries()) {
    const src = sources.get(c.source)!;
    const label = `${c.source} -O vhdx ${c.args.join(' ')} (${c.version}${c.sandboxed ? ', sandboxed' : ''})`;
    const [mine, theirs] = [at(`i${n}.vhdx`), at(`q${n}.vhdx`)];
    const args = (out: string) => ['convert', '-f', c.source === 'chain' ? 'qcow2' : 'raw', ...c.args, '-O', 'vhdx', src, out];
    const q = runQemu(c.version, args(theirs));
    const cli = [...args(mine), '--qemu-version', c.version];
    const r = c.sandboxed ? runInstar(cli) : await inProcess([...cli, '--sandbox=none']);
    const show = (x: RunResult, file: string) => `${x.status}\n${x.stdout}\n${x.stderr.split(oracle(c.version)).join('qemu-img')}`.split(file).join('FILE');
    if (show(r, mine) !== show(q, theirs)) problems.push(`${label}: convert printed\n${show(r, mine)}\nqemu:\n${show(q, theirs)}`);
    problems.push(...firstDifference(maskVhdx(read(mine), `instar ${label}`), maskVhdx(read(theirs), `qemu ${label}`), label));
    // ext4 allocates an extent-tree block for a file of many extents when its delayed allocation
    // is done: qemu's file has it at once, instar's (-t unsafe: no fsync) only after a sync.
    for (const f of [mine, theirs]) syncFile(f);
    problems.push(...sameOutput(c.version, (f) => ['info', '--output=json', '-f', 'vhdx', f], mine, theirs, label));
    problems.push(...sameOutput(c.version, (f) => ['check', '-f', 'vhdx', f], mine, theirs, label));
    problems.push(...sameOutput(c.version, (f) => ['compare', '-F', 'vhdx', src, f], mine, theirs, label));
    rmSync(mine);
    rmSync(theirs);
  }
  assert.deepEqual(problems, []);
});

test('dd -O vhdx through the CLI (the output opened write-only): output, file and info as qemu-img 7.2', async () => {
  const src = sources.get('holes')!;
  const [mine, theirs] = [at('dd-i.vhdx'), at('dd-q.vhdx')];
  const args = (out: string) => ['dd', '-f', 'raw', '-O', 'vhdx', `if=${src}`, `of=${out}`, 'bs=64k'];
  const q = runQemu('7.2', args(theirs));
  const r = await inProcess([...args(mine), '--qemu-version', '7.2', '--sandbox=none']);
  assert.deepEqual([r.status, r.stdout, r.stderr], [q.status, q.stdout, q.stderr.split(oracle('7.2')).join('qemu-img')]);
  assert.deepEqual(firstDifference(maskVhdx(read(mine), 'instar dd'), maskVhdx(read(theirs), 'qemu dd'), 'dd'), []);
  for (const f of [mine, theirs]) syncFile(f);
  assert.deepEqual(sameOutput('7.2', (f) => ['info', '--output=json', '-f', 'vhdx', f], mine, theirs, 'dd'), []);
});
