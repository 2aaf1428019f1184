// The generative dd hunt: random valid source images (sources.ts) and a random qemu-img dd
// command line over them (bs, count, skip in qemu's spellings, -f, -O, -U, --image-opts, now and
// then a bad operand or a target that is there already), compared as convert.ts compares.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng } from '../prng.ts';
import { SECRET, builtSource, fromRun, makeSource, probesBacking } from './sources.ts';
import { BIG_BYTES, recipeOf, runGenCase, targetName, type GenCase } from './convert.ts';
import type { HuntArea } from './area.ts';

const TARGETS = ['raw', 'raw', 'raw', 'qcow2', 'qcow2', 'vmdk', 'vpc', 'vhdx', 'qed', 'vdi', 'parallels', 'qcow', 'luks'];

/** A dd size operand: a plain number, a suffix, hex, now and then something qemu refuses. */
function sizeText(rng: Rng, n: number): string {
  const k = rng.below(12);
  if (k === 0 && n % 1024 === 0) return `${n / 1024}k`;
  if (k === 1) return `0x${n.toString(16)}`;
  if (k === 2 && n % (1024 * 1024) === 0 && n > 0) return `${n / 1024 / 1024}M`;
  if (k === 3) return rng.pick(['-1', 'abc', '1.5k', '0', '', '99999999999999999999', '2G', '010']);
  return String(n);
}

export function buildDdCase(seed: number, dir: string): GenCase {
  const rng = new Rng(seed);
  const src = rng.chance(0.7) ? builtSource(rng, dir) : makeSource(rng, dir, 'src');
  const format = rng.pick(TARGETS);
  const argv = ['dd'];
  const imageOpts = src.format === 'luks' || rng.chance(0.08);
  if (src.format === 'luks' || format === 'luks') argv.push('--object', `secret,id=sec0,data=${SECRET}`);
  if (!imageOpts && (src.format === 'raw' || rng.chance(0.7))) argv.push('-f', src.format);
  if (format !== 'raw' || rng.chance(0.5)) argv.push('-O', format);
  if (rng.chance(0.05)) argv.push('-U');
  if (rng.chance(0.03)) argv.push('-o', 'cluster_size=4k');
  const operands: string[] = [];
  const bs = rng.pick([512, 512, 1024, 4096, 65536, 1024 * 1024, 3 * 512, 1000, 1]);
  const big = src.size > BIG_BYTES;
  if (big) operands.push(`bs=${bs}`);
  else if (rng.chance(0.8)) operands.push(`bs=${sizeText(rng, bs)}`);
  const blocks = Math.max(1, Math.ceil(src.size / bs));
  // dd writes every block it copies, zeros too: a big sparse source is copied 64 MiB at most.
  const cap = Math.min(Math.floor((64 * 1024 * 1024) / bs), 1 << 20);
  if (big) operands.push(`count=${rng.below(Math.min(blocks, cap) + 1)}`);
  else if (rng.chance(0.5)) operands.push(`count=${sizeText(rng, rng.below(blocks + 3))}`);
  if (rng.chance(0.4)) operands.push(`skip=${sizeText(rng, rng.below(blocks + 2))}`);
  operands.push(`if=${imageOpts ? (src.format === 'luks' ? `driver=luks,key-secret=sec0,file.filename=${fromRun(src)}` : `driver=${src.format},file.filename=${fromRun(src)}`) : fromRun(src)}`);
  operands.push(`of=${targetName(format)}`);
  if (rng.chance(0.03)) operands.push(rng.pick(['conv=notrunc', 'bs=', 'of=x', 'status=none']));
  // Operands in any order (qemu takes them so), options first or among them.
  for (let i = operands.length - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    [operands[i], operands[j]] = [operands[j], operands[i]];
  }
  if (imageOpts) argv.push('--image-opts');
  argv.push(...operands);
  let premade: string | undefined;
  if (rng.chance(0.05)) {
    premade = 'premade.old';
    writeFileSync(join(dir, premade), Buffer.alloc(4096, 0x61));
  }
  // dd takes no -o: a LUKS target fails for want of a key, whatever else.
  const compare = format === 'luks' ? 'content' : 'bytes';
  const probed = !argv.includes('-f') && !imageOpts;
  return { seed, sources: [src], argv, format, compare, premade, sandboxed: rng.chance(0.25), unsafeQuirks: probed || probesBacking(src) };
}

export const area: HuntArea = {
  async runCase(seed, dir) {
    const c = buildDdCase(seed, dir);
    return { recipe: recipeOf(c), commands: 2, mismatches: await runGenCase(c, dir) };
  },
};
