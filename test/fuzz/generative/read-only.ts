// Hunt area "read-only": info, map, compare, check and measure on random valid images (images.ts),
// with random valid command lines, each through both oracles and instar (--qemu-version of each).
// Nothing here may change a file: every file's hash is compared before and after the case.
import { join } from 'node:path';
import { mkdirSync, statSync } from 'node:fs';
import { Rng } from '../prng.ts';
import { VERSIONS } from '../../helpers/oracles.ts';
import { buildImage, IMAGE_FORMATS, randomSize, type BuiltImage, type Layer } from './images.ts';
import { compareRun, runQemu, type CaseReport, type HuntArea, type Mismatch } from './area.ts';

const MiB = 1024 * 1024;
// measure knows qcow2, raw and luks; the others are one error message each.
const MEASURE_FORMATS = ['qcow2', 'qcow2', 'qcow2', 'raw', 'raw', 'luks', 'vmdk', 'vpc', 'vhdx', 'qed', 'vdi'];
const SECRET = ['--object', 'secret,id=sec0,data=hunt'];

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

/** The top's virtual size as made: its own, else its nearest backing file's (an overlay made without one takes it). */
const virtualSize = (img: BuiltImage): number => [...img.layers].reverse().find((l) => l.size !== undefined)?.size ?? 0;

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
  // raw and vpc have no check: one message, seldom worth a command.
  if ((img.top.format === 'raw' || img.top.format === 'vpc') && rng.chance(0.8)) return infoCommand(rng, img);
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
    if (rng.chance(0.1)) o.push('encrypt.format=luks', 'encrypt.key-secret=sec0');
  } else if (target === 'raw' && rng.chance(0.3)) o.push(`preallocation=${rng.pick(['off', 'falloc', 'full'])}`);
  else if (target === 'luks' && rng.chance(0.9)) o.push('key-secret=sec0', ...(rng.chance(0.3) ? [`cipher-alg=${rng.pick(['aes-128', 'aes-256', 'twofish-256'])}`] : []));
  if (o.some((x) => x.includes('secret'))) args.push(...SECRET);
  if (o.length > 0) args.push('-o', o.join(','));
  if (rng.chance(0.25)) return [...args, '--size', rng.chance(0.5) ? String(randomSize(rng, 4 * 1024 * MiB)) : rng.pick(['1G', '100M', '1.5G', '17k', '0', '1T'])];
  const snaps = img.top.snapshots;
  if (snaps.length > 0 && rng.chance(0.5)) {
    const i = rng.below(snaps.length);
    args.push('-l', rng.pick([snaps[i], `snapshot.name=${snaps[i]}`, `snapshot.id=${i + 1}`]));
  }
  return [...args, ...fmtArg(rng, img.top), img.top.file];
}

/**
 * What a read-only command must not change: size, modification and change times (big sparse
 * images are too big to hash; any write, truncate or hole punch moves both times). Not the
 * allocated blocks: ext4 allocates a just-written file's extent tree blocks at writeback, which
 * moved st_blocks of qemu's fresh copy between the two looks (campaign 9810000 case 1).
 */
function fileStates(dir: string, files: string[]): Map<string, string> {
  return new Map(files.map((f) => {
    const st = statSync(join(dir, f), { bigint: true });
    return [f, `${st.size}/${st.mtimeNs}/${st.ctimeNs}`];
  }));
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
    // -S 0 writes every zero: only for disks of up to 2 GiB (a 52 GiB copy filled the disk of
    // three hunts side by side). The draw is made either way, so that a case replays as before.
    const fullCopy = rng.chance(0.3) && virtualSize(img) <= 2 * 1024 * MiB;
    const args = ['convert', '-q', '-f', img.top.format, '-O', format, ...(fullCopy ? ['-S', '0'] : []), img.top.file, file];
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
  const before = fileStates(dir, files);
  const info = await runQemu(img.builder, ['info', '--output=json', '-U', img.top.file], dir);
  const size = info.status === 0 ? (JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'] : 0;
  const mismatches: Mismatch[] = [];
  let commands = 0;
  let qemuFailed = 0;
  for (let n = 4 + rng.below(5); n > 0; n--) {
    const kind = rng.below(10);
    const args = kind < 2 ? infoCommand(rng, img) : kind < 4 ? mapCommand(rng, img, size) : kind < 6 ? compareCommand(rng, img, others) : kind < 8 ? checkCommand(rng, img) : measureCommand(rng, img);
    for (const version of VERSIONS) {
      commands++;
      // An image named without -f is probed; qemu falls back to raw where instar refuses unless
      // --unsafe-quirks (README: an intended difference), so such command lines get the quirk.
      const probed = !args.includes('-f') || (args[0] === 'compare' && !args.includes('-F'));
      // The image in other/ may name a data file relative to the cwd (qemu's rule for data files),
      // the case directory, which instar's default path policy (the image's own directory tree)
      // refuses: README's intended difference, not a finding. Allowing the case directory keeps
      // every file the case made reachable, as the convert area does.
      const run = await compareRun(args, dir, version, { unsafeQuirks: probed, sandboxed: rng.chance(0.1), allowPath: dir });
      mismatches.push(...run.mismatches);
      // compare exits 1 for "different": not a failure.
      if (run.qemu.status !== 0 && !(args[0] === 'compare' && run.qemu.status === 1)) {
        qemuFailed++;
        if (process.env.HUNT_VERBOSE) console.log(`  qemu ${version} failed: ${args.join(' ')}: ${run.qemu.stderr.trim()}`);
      }
    }
  }
  const after = fileStates(dir, files);
  for (const [f, h] of before) if (after.get(f) !== h) mismatches.push({ command: `(file ${f})`, version: img.builder, what: 'file', qemu: h, instar: after.get(f) ?? 'gone' });
  return { recipe, commands, qemuFailed, mismatches };
}

export const area: HuntArea = { runCase };
