// `npm run bench`: convert -O raw of a 2 GiB corpus (bench/corpus.ts) in every input format, and
// convert of its raw disk into every format instar writes,
// instar (default sandboxed mode) and qemu-img 10.0 taking turns, N runs each (default 3), with
// the default cache mode (no flush) and with -t writeback (flushed),
// outputs on the same file system as the inputs and removed between runs. Prints the medians
// and instar/qemu ratios. Usage: npm run build && npm run bench [-- N [label-filter]]; a filter
// picks the rows whose label contains it, or with a leading '=' the one row so labelled ('=raw').
//
// Before every run a 2 GiB scratch file is written and removed (untimed). On a VM whose kernel
// reports free pages to the hypervisor (virtio-balloon free page reporting, e.g. Firecracker's
// page_reporting_order), memory freed more than ~2 s ago is handed back, and the next 1 GiB
// written into the page cache faults it in again: measured here, dd of 1 GiB took 1.0-1.3 s of
// system time after a 6 s pause and 0.19 s right after another write; qemu-img convert of the
// vpc image 1.7-2.7 s system time after 3 s idle, 0.46-0.85 s after the scratch write. Without
// it either side's time is mostly the luck of the previous run's timing.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism, loadavg } from 'node:os';
import { INSTAR_CLI, oracle } from '../test/helpers/oracles.ts';
import { BENCH_DIR, ensureCorpus } from './corpus.ts';

const runs = Math.max(3, Number(process.argv[2] ?? process.env.BENCH_N ?? 3));
const filter = process.argv[3];
const picked = (label: string): boolean => !filter || (filter.startsWith('=') ? label === filter.slice(1) : label.includes(filter));
const qemuImg = oracle('10.0');
const out = join(BENCH_DIR, 'out.raw');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const scratch = join(BENCH_DIR, 'scratch');
const scratchChunk = Buffer.alloc(4 * 1024 * 1024);

/** Writes and removes 2 GiB, so the run that follows gets memory the kernel has just used (see above). */
function warmFreeMemory(): void {
  const fd = openSync(scratch, 'w');
  try {
    for (let done = 0; done < 2048 * 1024 * 1024; done += scratchChunk.length) writeSync(fd, scratchChunk);
  } finally {
    closeSync(fd);
    rmSync(scratch, { force: true });
  }
}

/** Untimed set-up of every run: no output left, nothing dirty, freshly used free memory. */
function prepare(target = out): void {
  rmSync(target, { force: true });
  // The previous run's dirty pages go to disk now, not during this run.
  spawnSync('sync');
  warmFreeMemory();
}

/** perf, when installed: it counts the CPU time of the whole process tree (sandboxed guests too). */
const perf = ['/usr/bin/perf', '/usr/local/bin/perf'].find((p) => existsSync(p) && spawnSync(p, ['--version']).status === 0);

function timed(file: string, args: string[], target = out): number {
  prepare(target);
  const t0 = process.hrtime.bigint();
  const r = spawnSync(file, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`);
  rmSync(target, { force: true });
  return ms;
}

/**
 * CPU seconds (user + system) of one run: robust when the machine is loaded, where wall time
 * mostly measures the scheduler. With perf, the task-clock of the whole tree (instar sandboxed,
 * as it runs by default); without it, /usr/bin/time, and instar in-process (--sandbox=none): the
 * sandboxed guests' time is not reported to the parent through bwrap's process tree.
 */
function cpuSeconds(file: string, args: string[], env: Record<string, string> = {}): number {
  prepare();
  const report = join(BENCH_DIR, 'time.txt');
  if (perf) {
    const r = spawnSync(perf, ['stat', '-x', ',', '-e', 'task-clock', '-o', report, '--', file, ...args], { encoding: 'utf8' });
    rmSync(out, { force: true });
    if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`);
    const line = readFileSync(report, 'utf8').split('\n').find((l) => l.includes('task-clock'));
    return Number(line?.split(',')[0]) / 1000;
  }
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', '-o', report, file, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  rmSync(out, { force: true });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`);
  const [user, sys] = readFileSync(report, 'utf8').trim().split('\n').at(-1)!.split(' ').map(Number);
  return user + sys;
}

// instar as a user runs it: the built CLI through its own #! line, which decides which Node runs
// and with what environment (NODE_EXTRA_CA_CERTS, set here, costs every Node start ~40 ms CPU).
const instar = (args: string[]): [string, string[]] => [INSTAR_CLI, args];

const images = ensureCorpus((line) => process.stderr.write(line + '\n')).filter((i) => picked(i.label));
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
    samples[0].push(timed(...instar(convertArgs)));
    samples[1].push(timed(qemuImg, convertArgs));
    samples[2].push(timed(...instar(flushedArgs)));
    samples[3].push(timed(qemuImg, flushedArgs));
  }
  const [a, b, c, d] = samples.map(median);
  const cpu = `${cpuSeconds(...instar(convertArgs), perf ? {} : { INSTAR_SANDBOX: 'none' }).toFixed(2)}/${cpuSeconds(qemuImg, convertArgs).toFixed(2)}`;
  rows.push([image.label, a.toFixed(0), b.toFixed(0), (a / b).toFixed(2), c.toFixed(0), d.toFixed(0), (c / d).toFixed(2), cpu]);
  const list = (xs: number[]) => xs.map((x) => x.toFixed(0)).join('/');
  process.stderr.write(`${image.label}: instar ${list(samples[0])} ms, qemu-img ${list(samples[1])} ms, -t writeback: instar ${list(samples[2])} ms, qemu-img ${list(samples[3])} ms\n`);
}
// The fixed cost of a run, measured apart: convert of a 1 MiB raw image (one guest, nothing to
// copy to speak of). instar pays two Node starts in series (the CLI, then the sandboxed guest)
// where qemu-img pays one exec: this difference is in every row above.
if (picked('start-up')) {
  const tiny = join(BENCH_DIR, 'tiny.raw');
  const fd = openSync(tiny, 'w');
  writeSync(fd, Buffer.alloc(1024 * 1024, 0x5a));
  closeSync(fd);
  const args = ['convert', '-f', 'raw', '-O', 'raw', tiny, out];
  const samples: number[][] = [[], []];
  for (let i = 0; i < Math.max(runs, 9); i++) {
    samples[0].push(timed(...instar(args)));
    samples[1].push(timed(qemuImg, args));
  }
  rmSync(tiny, { force: true });
  const [a, b] = samples.map(median);
  rows.push(['start-up (1 MiB)', a.toFixed(0), b.toFixed(0), (a / b).toFixed(2), '', '', '', '']);
}
// The writers: convert of the raw disk into each format (default cache mode), where instar has a
// writer for it; a format it cannot write yet shows its refusal instead of times.
const WRITE_TARGETS: { label: string; args: string[] }[] = [
  { label: 'raw → qcow2', args: ['-O', 'qcow2'] },
  { label: 'raw → qcow2 zlib', args: ['-O', 'qcow2', '-c'] },
  { label: 'raw → vmdk', args: ['-O', 'vmdk'] },
  { label: 'raw → vpc', args: ['-O', 'vpc'] },
  { label: 'raw → vhdx', args: ['-O', 'vhdx'] },
];
const rawDisk = images.find((i) => i.label === 'raw') ?? ensureCorpus(() => {})[0];
const written = join(BENCH_DIR, 'out.img');
for (const target of WRITE_TARGETS.filter((t) => picked(t.label))) {
  const args = ['convert', '-f', 'raw', ...target.args, rawDisk.path, written];
  const probe = spawnSync(INSTAR_CLI, args, { encoding: 'utf8' });
  rmSync(written, { force: true });
  if (probe.status !== 0) {
    rows.push([target.label, 'n/a', '', '', '', '', '', probe.stderr.trim().slice(0, 60)]);
    continue;
  }
  const samples: number[][] = [[], []];
  for (let i = 0; i < runs; i++) {
    samples[0].push(timed(...instar(args), written));
    samples[1].push(timed(qemuImg, args, written));
  }
  const [a, b] = samples.map(median);
  rows.push([target.label, a.toFixed(0), b.toFixed(0), (a / b).toFixed(2), '', '', '', '']);
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.log(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '));
// The machine's load while the runs took place: wall times mean little above ~1 on 2 cores.
console.log(`cpu: ${perf ? 'perf task-clock, instar sandboxed' : '/usr/bin/time, instar --sandbox=none'}; free memory warmed before every run`);
console.log(`medians of ${runs} runs; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} (1/5/15 min), ${availableParallelism()} cores`);
