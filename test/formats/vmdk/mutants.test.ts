// Differential mutation test: qemu-made VMDKs (hosted sparse, stream-optimized, a descriptor
// with sparse extents) with a few bytes changed in the header, footer, grain directory and
// tables, or descriptor text. For every mutant the driver must refuse as both oracles refuse
// (word for word where qemu words it), or report the same info and the same bytes. Seeded, so a
// failure reproduces; a mutant an oracle crashes on, or on which the oracles disagree, gives no
// verdict. Every open and read must stay within bounded time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ImageError } from '../../../src/formats/types.ts';
import { VERSIONS, oracle, type OracleVersion } from '../../helpers/oracles.ts';
import { imageHash, infoDifferences, openAsHost, qemuOk, tempDir, writePattern } from './helpers.ts';
import { LONG } from '../../helpers/long.ts';

const MUTANTS_PER_SEED = 60;
/**
 * Short tier: every third mutant of each seed (the same seeded sequence, so mutant i is the same
 * bytes in both tiers): each seed's mutants land on the same spots (header, footer, tables, text)
 * at random, and each costs three oracle runs. The long tier tries all of them.
 */
const TRIED = (i: number) => LONG || i % 3 === 0;
/** Mutants claiming bigger disks get their info compared, not their bytes. */
const MAX_COMPARED_BYTES = 8 * 1024 * 1024;

function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

interface Verdict {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** An oracle under a memory cap and a timeout: some mutants make qemu allocate or loop. */
function guarded(v: OracleVersion, args: string[]): Verdict {
  const r = spawnSync('bash', ['-c', 'ulimit -v 3000000; exec "$0" "$@"', oracle(v), ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Where a mutation lands: header fields, footer, grain directory and tables, descriptor text. */
function spots(b: Buffer): number[] {
  if (b.subarray(0, 4).toString('latin1') !== 'KDMV') return [0];
  const gd = Number(b.readBigUInt64LE(56));
  const list = [4, 512];
  if (gd > 0 && gd * 512 < b.length) list.push(gd * 512, b.readUInt32LE(gd * 512) * 512);
  else list.push(b.length - 1536, b.length - 1024);
  return list;
}

function mutate(original: Buffer, rnd: () => number): Buffer {
  const b = Buffer.from(original);
  const places = spots(b);
  const isText = places.length === 1;
  for (let j = 1 + Math.floor(rnd() * 3); j > 0; j--) {
    const base = places[Math.floor(rnd() * places.length)];
    const pos = Math.min(b.length - 1, base + Math.floor(rnd() * (isText ? b.length : base === 4 ? 76 : 64)));
    if (isText && rnd() < 0.5) b[pos] = '0123456789 "\n\0=-x'.charCodeAt(Math.floor(rnd() * 17));
    else b[pos] = rnd() < 0.5 ? Math.floor(rnd() * 256) : b[pos] ^ (1 << Math.floor(rnd() * 8));
  }
  return b;
}

const SEEDS: { name: string; build(dir: string): string; mutated: string }[] = [
  { name: 'monolithicSparse', mutated: 'img.vmdk', build: (dir) => convert(dir, 'subformat=monolithicSparse,zeroed_grain=on') },
  { name: 'streamOptimized', mutated: 'img.vmdk', build: (dir) => convert(dir, 'subformat=streamOptimized') },
  { name: 'twoGbMaxExtentSparse descriptor', mutated: 'img.vmdk', build: (dir) => convert(dir, 'subformat=twoGbMaxExtentSparse') },
  { name: 'twoGbMaxExtentSparse extent', mutated: 'img-s001.vmdk', build: (dir) => convert(dir, 'subformat=twoGbMaxExtentSparse') },
];

function convert(dir: string, opts: string): string {
  const raw = join(dir, 'in.raw');
  writePattern(raw, 1024 * 1024 + 4096, 7);
  qemuOk('10.0', ['convert', '-O', 'vmdk', '-o', opts, raw, join(dir, 'img.vmdk')]);
  rmSync(raw);
  return join(dir, 'img.vmdk');
}

/** What the driver says about the image at `path`: its info and bytes, or its error. */
function ours(path: string): { error?: ImageError; info?: ReturnType<ReturnType<typeof openAsHost>['image']['info']>; hash?: string; readError?: ImageError } {
  const start = performance.now();
  try {
    const opened = openAsHost(path, false);
    try {
      const info = opened.image.info();
      if (opened.image.virtualSize > MAX_COMPARED_BYTES) return { info };
      try {
        return { info, hash: imageHash(opened.image) };
      } catch (e) {
        if (!(e instanceof ImageError)) throw e;
        return { info, readError: e };
      }
    } finally {
      opened.close();
    }
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
    return { error: e };
  } finally {
    assert.ok(performance.now() - start < 5000, `slow on ${path}`);
  }
}

for (const [index, seed] of SEEDS.entries()) {
  test(`vmdk mutants of ${seed.name} (${MUTANTS_PER_SEED}): same refusal or same info and bytes as both oracles`, () => {
    const { dir, cleanup } = tempDir();
    try {
      const top = seed.build(dir);
      const target = join(dir, seed.mutated);
      const original = readFileSync(target);
      const rnd = lcg(20261127 + index);
      const mismatches: string[] = [];
      let verdicts = 0;
      let tried = 0;
      for (let i = 0; i < MUTANTS_PER_SEED; i++) {
        const mutant = mutate(original, rnd);
        if (!TRIED(i)) continue;
        tried++;
        writeFileSync(target, mutant);
        const infos = VERSIONS.map((v) => guarded(v, ['info', '-f', 'vmdk', '--output=json', top]));
        if (infos.some((r) => r.status === null || r.status > 1) || infos[0].status !== infos[1].status) continue;
        const got = ours(top);
        verdicts++;
        const label = `mutant ${i}`;
        if (infos[0].status === 1) {
          const said = infos.map((r) => r.stderr.trimEnd().replace(`qemu-img: Could not open '${top}': `, ''));
          if (!got.error) mismatches.push(`${label}: qemu refused (${said[0]}), we opened`);
          else if (said[0] === said[1] && !said[0].startsWith("qemu-img: Can't get image size") && got.error.message !== said[0]) {
            mismatches.push(`${label}: qemu said ${JSON.stringify(said[0])}, we said ${JSON.stringify(got.error.message)}`);
          }
          continue;
        }
        // Known and deliberate: disks over 2^53 bytes are refused (offsets are JS numbers).
        const huge = VERSIONS.every((_, k) => (JSON.parse(infos[k].stdout) as { 'virtual-size': number })['virtual-size'] > Number.MAX_SAFE_INTEGER);
        if (got.error && huge && got.error.message === 'Image size is too large for this reader') continue;
        if (got.error) {
          mismatches.push(`${label}: qemu opened, we said ${JSON.stringify(got.error.message)}`);
          continue;
        }
        for (const [k, v] of VERSIONS.entries()) {
          const diffs = infoDifferences(got.info!, JSON.parse(infos[k].stdout) as Record<string, unknown>);
          if (diffs.length) mismatches.push(`${label} info vs ${v}: ${diffs.join('; ')}`);
        }
        if (got.hash === undefined && !got.readError) continue;
        const out = join(dir, 'out.raw');
        const conv = guarded('10.0', ['convert', '-f', 'vmdk', '-O', 'raw', top, out]);
        if (conv.status === 0) {
          const want = createHash('sha256').update(readFileSync(out)).digest('hex');
          if (got.hash !== want) mismatches.push(`${label}: bytes differ${got.readError ? ` (we: ${got.readError.message})` : ''}`);
        } else if (conv.status === 1 && /error while reading/.test(conv.stderr) && !got.readError) {
          mismatches.push(`${label}: qemu failed reading (${conv.stderr.trim()}), we read`);
        }
        rmSync(out, { force: true });
      }
      assert.ok(verdicts > tried / 2, `only ${verdicts} verdicts of ${tried}`);
      assert.deepEqual(mismatches, []);
    } finally {
      cleanup();
    }
  });
}
