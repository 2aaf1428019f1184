// `npm run bench`: convert -O raw of a 2 GiB corpus (bench/corpus.ts) in every input format,
// instar (default sandboxed mode) and qemu-img 10.0 taking turns, N runs each (default 3), with
// the default cache mode (no flush) and with -t writeback (flushed),
// outputs on the same file system as the inputs and removed between runs. Prints the medians
// and instar/qemu ratios. Usage: npm run build && npm run bench [-- N [label-filter]]
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism, loadavg } from 'node:os';
import { INSTAR_CLI, oracle } from '../test/helpers/oracles.ts';
import { BENCH_DIR, ensureCorpus } from './corpus.ts';

const runs = Math.max(3, Number(process.argv[2] ?? process.env.BENCH_N ?? 3));
const filter = process.argv[3];
const qemuImg = oracle('10.0');
const out = join(BENCH_DIR, 'out.raw');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function timed(file: string, args: string[]): number {
  rmSync(out, { force: true });
  // Untimed: the previous run's dirty pages go to disk now, not during this run.
  spawnSync('sync');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(file, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`);
  rmSync(out, { force: true });
  return ms;
}

/**
 * CPU seconds (user + system) of one run, from /usr/bin/time: robust when the machine is loaded,
 * where wall time mostly measures the scheduler. instar runs in-process here (--sandbox=none):
 * the sandboxed guests' time is not reported to the parent through bwrap's process tree.
 */
function cpuSeconds(file: string, args: string[], env: Record<string, string> = {}): number {
  rmSync(out, { force: true });
  spawnSync('sync');
  const report = join(BENCH_DIR, 'time.txt');
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', '-o', report, file, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  rmSync(out, { force: true });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`);
  const [user, sys] = readFileSync(report, 'utf8').trim().split('\n').at(-1)!.split(' ').map(Number);
  return user + sys;
}

const images = ensureCorpus((line) => process.stderr.write(line + '\n')).filter((i) => !filter || i.label.includes(filter));
// qemu-img convert's default cache mode for the target is 'unsafe' (no flush at the end), and
// instar's too. The '-t writeback' columns are both sides flushing the target before they exit.
const rows: string[][] = [['format', 'instar (ms)', 'qemu-img (ms)', 'ratio', 'instar -t wb', 'qemu -t wb', 'ratio', 'cpu s instar/qemu']];
for (const image of images) {
  const samples: number[][] = [[], [], [], []];
  const convertArgs = ['convert', '-f', image.format, '-O', 'raw', image.path, out];
  const flushedArgs = ['convert', '-t', 'writeback', ...convertArgs.slice(1)];
  // Warm the page cache once, so that neither side pays for the first cold read.
  timed(qemuImg, convertArgs);
  for (let i = 0; i < runs; i++) {
    samples[0].push(timed(process.execPath, [INSTAR_CLI, ...convertArgs]));
    samples[1].push(timed(qemuImg, convertArgs));
    samples[2].push(timed(process.execPath, [INSTAR_CLI, ...flushedArgs]));
    samples[3].push(timed(qemuImg, flushedArgs));
  }
  const [a, b, c, d] = samples.map(median);
  const cpu = `${cpuSeconds(process.execPath, [INSTAR_CLI, ...convertArgs], { INSTAR_SANDBOX: 'none' }).toFixed(2)}/${cpuSeconds(qemuImg, convertArgs).toFixed(2)}`;
  rows.push([image.label, a.toFixed(0), b.toFixed(0), (a / b).toFixed(2), c.toFixed(0), d.toFixed(0), (c / d).toFixed(2), cpu]);
  const list = (xs: number[]) => xs.map((x) => x.toFixed(0)).join('/');
  process.stderr.write(`${image.label}: instar ${list(samples[0])} ms, qemu-img ${list(samples[1])} ms, -t writeback: instar ${list(samples[2])} ms, qemu-img ${list(samples[3])} ms\n`);
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '));
// The machine's load while the runs took place: wall times mean little above ~1 on 2 cores.
console.log(`medians of ${runs} runs; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} (1/5/15 min), ${availableParallelism()} cores`);
