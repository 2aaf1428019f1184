// The convert benchmark's corpus: a seeded 2 GiB raw disk of random, text, written zeros and
// holes, and the oracle qemu-img 10.0's conversions of it into each input format. Built once and
// cached under .bench/ (gitignored); a stamp file records what was built, so a changed recipe
// rebuilds.
import { spawnSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { oracle, ROOT } from '../test/helpers/oracles.ts';
import { prng } from '../test/helpers/xorshift.ts';

export const BENCH_DIR = join(ROOT, '.bench');
const MiB = 1024 * 1024;
const SIZE = 2048 * MiB;
const SEGMENT = 4 * MiB;
const SEED = 20_261_127;
const RECIPE = `v1 size=${SIZE} segment=${SEGMENT} seed=${SEED}`;

export interface CorpusImage {
  /** Row label. */
  label: string;
  path: string;
  /** -f for the convert runs (instar does not guess raw). */
  format: string;
}

/** How each image is made from the raw disk by qemu-img 10.0. */
const RECIPES: { label: string; file: string; format: string; args: string[] }[] = [
  { label: 'qcow2', file: 'disk.qcow2', format: 'qcow2', args: ['-O', 'qcow2'] },
  { label: 'qcow2 zlib', file: 'disk-zlib.qcow2', format: 'qcow2', args: ['-O', 'qcow2', '-c'] },
  { label: 'qcow2 zstd', file: 'disk-zstd.qcow2', format: 'qcow2', args: ['-O', 'qcow2', '-c', '-o', 'compression_type=zstd'] },
  { label: 'vmdk sparse', file: 'disk.vmdk', format: 'vmdk', args: ['-O', 'vmdk'] },
  { label: 'vmdk stream', file: 'disk-stream.vmdk', format: 'vmdk', args: ['-O', 'vmdk', '-o', 'subformat=streamOptimized'] },
  { label: 'vpc', file: 'disk.vhd', format: 'vpc', args: ['-O', 'vpc'] },
  { label: 'vhdx', file: 'disk.vhdx', format: 'vhdx', args: ['-O', 'vhdx'] },
];


const TEXT = Buffer.from(
  Array.from({ length: 2000 }, (_, i) => `line ${i}: the quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet ${i * 7919 % 1000}\n`).join(''),
);

/** The raw disk, written segment by segment: ~30% random, 25% text, 15% written zeros, 30% holes. */
function writeRawDisk(path: string): void {
  const next = prng(SEED);
  // AES-CTR with a fixed key: a fast deterministic stream of incompressible bytes.
  const key = Buffer.alloc(16, 7);
  const random = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zero = Buffer.alloc(SEGMENT);
  const text = Buffer.alloc(SEGMENT);
  for (let i = 0; i < SEGMENT; i += TEXT.length) TEXT.copy(text, i, 0, Math.min(TEXT.length, SEGMENT - i));
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < SIZE; off += SEGMENT) {
      const pick = next() % 100;
      let seg: Buffer | undefined;
      if (pick < 30) seg = random.update(zero);
      else if (pick < 55) seg = text;
      else if (pick < 70) seg = zero;
      if (seg) for (let done = 0; done < seg.length; ) done += writeSync(fd, seg, done, seg.length - done, off + done);
    }
    ftruncateSync(fd, SIZE);
  } finally {
    closeSync(fd);
  }
}

/** Builds whatever is missing and returns the images, the raw disk first. */
export function ensureCorpus(log: (line: string) => void): CorpusImage[] {
  mkdirSync(BENCH_DIR, { recursive: true });
  const stamp = join(BENCH_DIR, 'corpus.stamp');
  const raw = join(BENCH_DIR, 'disk.raw');
  const fresh = existsSync(stamp) && readFileSync(stamp, 'utf8') === RECIPE;
  if (!fresh) {
    for (const r of RECIPES) rmSync(join(BENCH_DIR, r.file), { force: true });
    log(`building the 2 GiB raw disk in ${BENCH_DIR} …`);
    writeRawDisk(raw);
  }
  const qemuImg = oracle('10.0');
  for (const r of RECIPES) {
    const path = join(BENCH_DIR, r.file);
    if (existsSync(path)) continue;
    log(`qemu-img convert ${r.args.join(' ')} → ${r.file} …`);
    const p = spawnSync(qemuImg, ['convert', '-f', 'raw', ...r.args, raw, path + '.tmp'], { encoding: 'utf8' });
    if (p.status !== 0) throw new Error(`qemu-img convert to ${r.label} failed: ${p.stderr}`);
    spawnSync('mv', [path + '.tmp', path]);
  }
  writeFileSync(stamp, RECIPE);
  return [{ label: 'raw', path: raw, format: 'raw' }, ...RECIPES.map((r) => ({ label: r.label, path: join(BENCH_DIR, r.file), format: r.format }))];
}
