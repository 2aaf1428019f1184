// `npm run bench:info`: wall time of `info` on a small qcow2 and raw image, instar sandboxed
// (auto), instar in-process (--sandbox=none) and qemu-img, as medians over N runs.
// Usage: node --import tsx bench/info.ts [N]   (build first: npm run build)
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSTAR_CLI, oracle } from '../test/helpers/oracles.ts';
import { runOp, type LayerName } from '../src/host/sandbox/run.ts';

const runs = Math.max(1, Number(process.argv[2] ?? process.env.BENCH_N ?? 21));
const qemuImg = oracle('7.2');
const dir = mkdtempSync(join(tmpdir(), 'instar-bench-'));

function must(file: string, args: string[]): void {
  const r = spawnSync(file, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: ${r.stderr || r.error}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Median wall time in ms, and how the last run ended. */
function time(file: string, args: string[]): { ms: number; status: string } {
  const samples: number[] = [];
  let status = '';
  spawnSync(file, args); // warm the page cache
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(file, args, { encoding: 'utf8' });
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
    status = r.status === 0 ? 'ok' : `exit ${r.status}: ${(r.stderr ?? '').split('\n')[0].slice(0, 70)}`;
  }
  return { ms: median(samples), status };
}

try {
  const images = { qcow2: join(dir, 'small.qcow2'), raw: join(dir, 'small.raw') };
  must(qemuImg, ['create', '-q', '-f', 'qcow2', images.qcow2, '64M']);
  must(qemuImg, ['create', '-q', '-f', 'raw', images.raw, '64M']);
  console.log(`info, median of ${runs} runs (ms); ratios against qemu-img ${qemuImg}`);
  for (const [format, image] of Object.entries(images)) {
    const fmt = ['-f', format];
    const qemu = time(qemuImg, ['info', ...fmt, image]);
    // As users run it (npx, the bin link): through cli.js's own launcher lines, not `node cli.js`.
    const auto = time(INSTAR_CLI, ['info', ...fmt, '--sandbox=auto', image]);
    const none = time(INSTAR_CLI, ['info', ...fmt, '--sandbox=none', image]);
    const row = (name: string, r: { ms: number; status: string }) =>
      console.log(`  ${format.padEnd(6)} ${name.padEnd(22)} ${r.ms.toFixed(1).padStart(8)}  x${(r.ms / qemu.ms).toFixed(2).padStart(5)}  ${r.status}`);
    row('qemu-img', qemu);
    row('instar --sandbox=auto', auto);
    row('instar --sandbox=none', none);
    console.log(`  ${format.padEnd(6)} sandbox overhead        ${(auto.ms - none.ms).toFixed(1).padStart(8)}`);
  }
  await layerBreakdown(images.qcow2);
} finally {
  rmSync(dir, { recursive: true, force: true });
}

/** Where a sandboxed run's time goes: the guest launch alone (no CLI start), layer by layer. */
async function layerBreakdown(image: string): Promise<void> {
  console.log('guest launch for info on the qcow2 (host already running), median ms:');
  const fd = openSync(image, 'r');
  try {
    const steps: [string, LayerName[]][] = [
      ['node only (env, cwd, heap cap)', ['permission', 'prlimit', 'bwrap', 'seccomp']],
      ['+ permission model', ['prlimit', 'bwrap', 'seccomp']],
      ['+ prlimit', ['bwrap', 'seccomp']],
      ['+ bwrap', ['seccomp']],
      ['+ seccomp (all layers)', []],
    ];
    const inProcess: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await runOp('info', {}, [{ fd, role: 'input', writable: false }], { mode: 'none' });
      inProcess.push(performance.now() - t0);
    }
    console.log(`  ${'in-process (--sandbox=none)'.padEnd(32)} ${median(inProcess).toFixed(1).padStart(8)}`);
    for (const [name, disableLayers] of steps) {
      const samples: number[] = [];
      for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        await runOp('info', {}, [{ fd, role: 'input', writable: false }], { mode: 'auto', disableLayers });
        samples.push(performance.now() - t0);
      }
      console.log(`  ${name.padEnd(32)} ${median(samples).toFixed(1).padStart(8)}`);
    }
  } finally {
    closeSync(fd);
  }
}
