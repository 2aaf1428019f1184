// Hunt area "read-only": info, map, compare, check and measure on random valid images (images.ts),
// with random valid command lines, each through both oracles and instar (--qemu-version of each).
// Nothing here may change a file: every file's hash is compared before and after the case.
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { Rng } from '../prng.ts';
import { VERSIONS } from '../../helpers/oracles.ts';
import { hashFile } from '../diff-tools.ts';
import { buildImage, IMAGE_FORMATS, randomSize, type BuiltImage, type Layer } from './images.ts';
import { compareRun, runQemu, type CaseReport, type HuntArea, type Mismatch } from './area.ts';

const MiB = 1024 * 1024;
const MEASURE_FORMATS = ['qcow2', 'raw', 'vmdk', 'vpc', 'vhdx', 'luks', 'qed', 'vdi'];

function fmtArg(rng: Rng, layer: Layer, flag = '-f'): string[] {
  if (rng.chance(0.45)) return [];
  // -f raw on any image is valid too (the container read as a disk).
  return [flag, rng.chance(0.1) ? 'raw' : layer.format];
}

const output = (rng: Rng): string[] => (rng.chance(0.5) ? ['--output=json'] : rng.chance(0.2) ? ['--output=human'] : []);

/** An offset for map: inside, at or past the end, aligned or not. */
function mapOffset(rng: Rng, size: number): string {
  const kind = rng.below(5);
  const n = kind === 0 ? 0 : kind === 1 ? size : kind === 2 ? Math.floor(rng.below(size + 1) / 512) * 512 : kind === 3 ? rng.below(size + 1) : size + rng.below(4 * MiB);
  return String(n);
}

function infoCommand(rng: Rng, img: BuiltImage): string[] {
  return ['info', ...fmtArg(rng, img.top), ...output(rng), ...(rng.chance(0.4) ? ['--backing-chain'] : []), ...(rng.chance(0.2) ? ['-U'] : []), img.top.file];
}

function mapCommand(rng: Rng, img: BuiltImage, size: number): string[] {
  const args = ['map', ...fmtArg(rng, img.top), ...output(rng)];
  if (rng.chance(0.4)) args.push(`--start-offset=${mapOffset(rng, size)}`);
  if (rng.chance(0.4)) args.push(`--max-length=${mapOffset(rng, size)}`);
  if (rng.chance(0.1)) args.push('-U');
  return [...args, img.top.file];
}

function checkCommand(rng: Rng, img: BuiltImage): string[] {
  return ['check', ...fmtArg(rng, img.top), ...output(rng), ...(rng.chance(0.1) ? ['-U'] : []), ...(rng.chance(0.1) ? ['-q'] : []), img.top.file];
}

/** compare's second image: the same one, a layer below, a converted copy or another random image. */
function compareCommand(rng: Rng, img: BuiltImage, others: Layer[]): string[] {
  const [a, b] = rng.chance(0.5) ? [img.top, rng.pick(others)] : [rng.pick(others), img.top];
  const args = ['compare', ...fmtArg(rng, a, '-f'), ...fmtArg(rng, b, '-F')];
  if (rng.chance(0.4)) args.push('-s');
  if (rng.chance(0.2)) args.push('-q');
  if (rng.chance(0.1)) args.push('-U');
  return [...args, a.file, b.file];
}

function measureCommand(rng: Rng, img: BuiltImage): string[] {
  const target = rng.pick(MEASURE_FORMATS);
  const args = ['measure', ...output(rng)];
  if (rng.chance(0.85)) args.push('-O', target);
  const o: string[] = [];
  if (target === 'qcow2') {
    if (rng.chance(0.3)) o.push(`cluster_size=${2 ** (9 + rng.below(13))}`);
    if (rng.chance(0.2)) o.push(`compat=${rng.pick(['0.10', '1.1'])}`);
    if (rng.chance(0.3)) o.push(`preallocation=${rng.pick(['off', 'metadata', 'falloc', 'full'])}`);
    if (rng.chance(0.15)) o.push('extended_l2=on');
    if (rng.chance(0.15)) o.push(`refcount_bits=${2 ** rng.below(7)}`);
    if (rng.chance(0.1)) o.push('data_file=m.data');
  } else if (target === 'raw' && rng.chance(0.3)) o.push(`preallocation=${rng.pick(['off', 'falloc', 'full'])}`);
  if (o.length > 0) args.push('-o', o.join(','));
  if (rng.chance(0.25)) return [...args, '--size', rng.chance(0.5) ? String(randomSize(rng, 4 * 1024 * MiB)) : rng.pick(['1G', '100M', '1.5G', '17k', '0', '1T'])];
  const snaps = img.top.snapshots;
  if (snaps.length > 0 && rng.chance(0.5)) {
    const i = rng.below(snaps.length);
    args.push('-l', rng.pick([snaps[i], `snapshot.name=${snaps[i]}`, `snapshot.id=${i + 1}`]));
  }
  return [...args, ...fmtArg(rng, img.top), img.top.file];
}

function hashes(dir: string, files: string[]): Map<string, string> {
  return new Map(files.map((f) => [f, hashFile(join(dir, f))]));
}

async function runCase(seed: number, dir: string): Promise<CaseReport> {
  const rng = new Rng(seed);
  const img = buildImage(rng, dir);
  const recipe = [`# seed ${seed}`, ...img.recipe];
  // compare's partners: the lower layers, a converted copy, another random image.
  const others: Layer[] = [img.top, ...img.layers.slice(0, -1)];
  if (rng.chance(0.5)) {
    const format = rng.pick(IMAGE_FORMATS);
    const file = `copy.${format}`;
    const args = ['convert', '-q', '-f', img.top.format, '-O', format, ...(rng.chance(0.3) ? ['-S', '0'] : []), img.top.file, file];
    recipe.push(`qemu-img-${img.builder} ${args.join(' ')}`);
    if ((await runQemu(img.builder, args, dir)).status === 0) others.push({ file, format, options: {}, snapshots: [], bitmaps: [], aborted: false });
  }
  if (rng.chance(0.3)) {
    mkdirSync(join(dir, 'other'));
    const second = buildImage(rng, join(dir, 'other'), { chainChance: 0.2 });
    recipe.push('# second image in other/', ...second.recipe);
    others.push({ ...second.top, file: `other/${second.top.file}` });
  }
  const files = [...new Set([...img.files, ...others.map((l) => l.file)])];
  const before = hashes(dir, files);
  const info = await runQemu(img.builder, ['info', '--output=json', '-U', img.top.file], dir);
  const size = info.status === 0 ? (JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'] : 0;
  const mismatches: Mismatch[] = [];
  let commands = 0;
  for (let n = 4 + rng.below(5); n > 0; n--) {
    const kind = rng.below(10);
    const args = kind < 2 ? infoCommand(rng, img) : kind < 4 ? mapCommand(rng, img, size) : kind < 6 ? compareCommand(rng, img, others) : kind < 8 ? checkCommand(rng, img) : measureCommand(rng, img);
    for (const version of VERSIONS) {
      commands++;
      // An image named without -f is probed; qemu falls back to raw where instar refuses unless
      // --unsafe-quirks (README: an intended difference), so such command lines get the quirk.
      const probed = !args.includes('-f') || (args[0] === 'compare' && !args.includes('-F'));
      mismatches.push(...(await compareRun(args, dir, version, { unsafeQuirks: probed, sandboxed: rng.chance(0.1) })).mismatches);
    }
  }
  const after = hashes(dir, files);
  for (const [f, h] of before) if (after.get(f) !== h) mismatches.push({ command: `(file ${f})`, version: img.builder, what: 'file', qemu: h, instar: after.get(f) ?? 'gone' });
  return { recipe, commands, mismatches };
}

export const area: HuntArea = { runCase };
