// `convert -O vpc` and `convert -O vmdk` through instar's command line (the convert pipeline with
// the VHD and VMDK writers), against qemu-img 7.2 and 10.0 run on the same sources: the
// command's output and status, the files (random fields masked; streamOptimized by structure,
// its deflate being node's), where they have data and holes, and what `info` (disk sizes
// masked: see dataMap), `check` and `compare` print.
// A few cases go through the real sandbox (the built CLI: run `npm run build` first), the rest
// in-process with --sandbox=none.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runCommandLine } from '../../src/cli/run.ts';
import { longTest, LONG } from '../helpers/long.ts';
import { INSTAR_ALIAS } from '../helpers/oracles.ts';
import { dataMap, maskActualSize, chainFiles, firstDifference, grains, holesFile, maskCid, maskVhd, MiB, rawFile, read, sameOutput } from './vpc-vmdk-harness.ts';

let dir = '';
const at = (name: string) => join(dir, name);
const sources = new Map<string, string>();

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-cli-'));
  sources.set('holes', holesFile(at('holes.raw')));
  sources.set('empty', rawFile(at('empty.raw'), 5 * MiB, []));
  sources.set('chain', chainFiles(dir)[0]);
  if (LONG) sources.set('long', rawFile(at('long.raw'), 800 * 1024 * MiB, [[5000, Buffer.from('hello')], [799 * 1024 * MiB + 3, Buffer.from('end')]]));
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function inProcess(args: string[]): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const status = await runCommandLine(args, { out: (t) => (stdout += t), err: (t) => (stderr += t), env: process.env, cwd: dir, argv1: INSTAR_ALIAS });
  return { stdout, stderr, status, signal: null };
}

interface Case {
  source: string;
  format: 'vpc' | 'vmdk';
  /** dd instead of convert (qemu's dd writes every block, zeros too). */
  dd?: boolean;
  /** convert's options before the file names (dd's operands). */
  args: string[];
  versions: OracleVersion[];
  sandboxed?: boolean;
  /** Extents too large to read through (sparse files of 2 GiB each): compare their sizes and allocation only. */
  hugeExtents?: boolean;
}

const CASES: Case[] = [
  { source: 'chain', format: 'vpc', args: [], versions: ['7.2', '10.0'], sandboxed: true },
  { source: 'holes', format: 'vmdk', args: ['-o', 'subformat=twoGbMaxExtentFlat'], versions: ['10.0'], sandboxed: true },
  { source: 'chain', format: 'vmdk', args: ['-p'], versions: ['7.2'], sandboxed: true },
  { source: 'holes', format: 'vpc', args: ['-o', 'subformat=fixed,force_size=on'], versions: ['7.2', '10.0'] },
  { source: 'holes', format: 'vpc', args: ['-S', '0'], versions: ['7.2'] },
  { source: 'empty', format: 'vpc', args: ['-o', 'subformat=fixed'], versions: ['10.0'] },
  { source: 'holes', format: 'vmdk', args: ['-o', 'subformat=streamOptimized'], versions: ['7.2', '10.0'] },
  { source: 'holes', format: 'vmdk', args: ['-c'], versions: ['7.2', '10.0'] },
  { source: 'chain', format: 'vmdk', args: ['-o', 'compat6=on,adapter_type=lsilogic,zeroed_grain=on', '-o', 'subformat=twoGbMaxExtentSparse'], versions: ['10.0'] },
  { source: 'empty', format: 'vmdk', args: ['-o', 'subformat=monolithicFlat'], versions: ['7.2'] },
  { source: 'holes', format: 'vmdk', args: ['-S', '0', '-o', 'subformat=monolithicSparse'], versions: ['10.0'] },
  { source: 'holes', format: 'vmdk', args: ['-S', '0', '-o', 'subformat=streamOptimized'], versions: ['7.2'] },
  { source: 'chain', format: 'vpc', dd: true, args: ['bs=64k'], versions: ['7.2'] },
  { source: 'holes', format: 'vmdk', dd: true, args: ['bs=1M', 'count=5'], versions: ['10.0'] },
];

/** 400 extents: a descriptor past qemu's 20-sector DESC_SIZE, rewritten whole on the first write (seconds of file system work: long tier). */
const LONG_CASES: Case[] = [{ source: 'long', format: 'vmdk', args: ['-o', 'subformat=twoGbMaxExtentFlat'], versions: ['7.2', '10.0'], hugeExtents: true }];

/** The files of an image (descriptor first, then extents), by the stem they share. */
const filesOf = (stem: string) => readdirSync(dir).filter((f) => f.startsWith(`${stem}.`) || f.startsWith(`${stem}-`)).sort((a, b) => a.length - b.length || a.localeCompare(b));

/** Every difference between instar's and qemu's convert, files, info, check and compare, per case. */
async function differences(cases: Case[], prefix: string): Promise<string[]> {
  const problems: string[] = [];
  for (const [n, c] of cases.entries()) {
    const src = sources.get(c.source)!;
    const ext = c.format === 'vpc' ? 'vhd' : 'vmdk';
    for (const version of c.versions) {
      const label = `${c.source} -O ${c.format} ${c.args.join(' ')} (${version}${c.sandboxed ? ', sandboxed' : ''})`;
      // Stems of one length: VMDK descriptors name their extents by them.
      const [mine, theirs] = [`i${prefix}${n}${version === '7.2' ? 'a' : 'b'}`, `q${prefix}${n}${version === '7.2' ? 'a' : 'b'}`];
      const srcFormat = c.source === 'chain' ? 'qcow2' : 'raw';
      const args = (stem: string) => c.dd
        ? ['dd', '-f', srcFormat, '-O', c.format, ...c.args, `if=${src}`, `of=${at(`${stem}.${ext}`)}`]
        : ['convert', '-f', srcFormat, ...c.args, '-O', c.format, src, at(`${stem}.${ext}`)];
      const q = runQemu(version, args(theirs));
      const cli = [...args(mine), '--qemu-version', version];
      const r = c.sandboxed ? runInstar(cli) : await inProcess([...cli, '--sandbox=none']);
      const show = (x: RunResult, stem: string) => `${x.status}\n${x.stdout}\n${x.stderr.split(oracle(version)).join('qemu-img')}`.split(stem).join('STEM');
      if (show(r, mine) !== show(q, theirs)) problems.push(`${label}: convert printed\n${show(r, mine)}\nqemu:\n${show(q, theirs)}`);
      const [a, b] = [filesOf(mine), filesOf(theirs)];
      if (a.length !== b.length) {
        problems.push(`${label}: instar wrote ${a.join(' ')}, qemu ${b.join(' ')}`);
        continue;
      }
      const stream = c.args.join(' ').includes('streamOptimized');
      a.forEach((name, i) => {
        if (c.hugeExtents && i > 0) {
          const [sa, sb] = [statSync(at(name)).size, statSync(at(b[i])).size];
          const [da, db] = [dataMap(at(name)), dataMap(at(b[i]))];
          if (sa !== sb || da !== db) problems.push(`${label}: ${name} is ${sa} bytes with data at ${da}, qemu's ${sb} with data at ${db}`);
          return;
        }
        const [x, y] = c.format === 'vpc'
          ? [maskVhd(read(at(name)), `instar ${label}`), maskVhd(read(at(b[i])), `qemu ${label}`)]
          : [maskCid(read(at(name)), mine), maskCid(read(at(b[i])), theirs)];
        if (stream) {
          problems.push(...firstDifference(x.subarray(0, 21 * 512), y.subarray(0, 21 * 512), `${label} ${name} header and descriptor`));
          assert.deepEqual(grains(x, `instar ${label}`), grains(y, `qemu ${label}`), `${label}: allocated grains`);
          return;
        }
        problems.push(...firstDifference(x, y, `${label} ${name}`));
        // A descriptor file is as long as its CID's hex digits make it: its masked bytes compared above.
        if (!(a.length > 1 && i === 0) && dataMap(at(name)) !== dataMap(at(b[i]))) problems.push(`${label}: ${name} has data at ${dataMap(at(name))}, qemu's at ${dataMap(at(b[i]))}`);
      });
      const normalize = (t: string) => maskActualSize(t.replace(/"cid": \d+/g, '"cid": 0'));
      const [mineFile, theirFile] = [at(`${mine}.${ext}`), at(`${theirs}.${ext}`)];
      problems.push(...sameOutput(version, (f) => ['info', '--output=json', '-f', c.format, f], mineFile, theirFile, label, normalize));
      problems.push(...sameOutput(version, (f) => ['check', '-f', c.format, f], mineFile, theirFile, label));
      problems.push(...sameOutput(version, (f) => ['compare', '-F', c.format, src, f], mineFile, theirFile, label));
      for (const f of [...a, ...b]) rmSync(at(f));
    }
  }
  return problems;
}

test('convert -O vpc / -O vmdk through the CLI: output, files, info, check and compare as qemu-img 7.2 and 10.0', async () => {
  assert.deepEqual(await differences(CASES, ''), []);
});

longTest('convert -O vmdk through the CLI: a twoGbMaxExtentFlat descriptor longer than 20 sectors', async () => {
  assert.deepEqual(await differences(LONG_CASES, 'L'), []);
});
