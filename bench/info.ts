// `npm run bench:info`: wall time of `info` on a small qcow2 and raw image, instar sandboxed
// (auto), instar in-process (--sandbox=none) and qemu-img, as medians over N runs.
// Usage: node --import tsx bench/info.ts [N]   (build first: npm run build)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSTAR_CLI, oracle } from '../test/helpers/oracles.ts';

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
    const auto = time(process.execPath, [INSTAR_CLI, 'info', ...fmt, '--sandbox=auto', image]);
    const none = time(process.execPath, [INSTAR_CLI, 'info', ...fmt, '--sandbox=none', image]);
    const row = (name: string, r: { ms: number; status: string }) =>
      console.log(`  ${format.padEnd(6)} ${name.padEnd(22)} ${r.ms.toFixed(1).padStart(8)}  x${(r.ms / qemu.ms).toFixed(2).padStart(5)}  ${r.status}`);
    row('qemu-img', qemu);
    row('instar --sandbox=auto', auto);
    row('instar --sandbox=none', none);
    console.log(`  ${format.padEnd(6)} sandbox overhead        ${(auto.ms - none.ms).toFixed(1).padStart(8)}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
