// The generative convert/dd hunt's source images: mostly the shared builder's (images.ts: qcow2,
// vmdk, vpc, vhdx and raw, chains, snapshots, bitmaps, dirty images), and the readable formats it
// does not make (vdi, qed, parallels, qcow, luks), made here alike by the oracles: qemu-img 10.0
// create with random -o options, qemu-io writes, zero writes, compressed writes and discards at
// random offsets, qed/qcow2 tops over mixed backing chains.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { oracle } from '../../helpers/oracles.ts';
import type { Rng } from '../prng.ts';
import { buildImage } from './images.ts';

export interface Source {
  /** File name inside the case's base directory. */
  name: string;
  format: string;
  size: number;
  /** LUKS password (the secret's data). */
  secret?: string;
  snapshots: string[];
  bitmaps: string[];
  /** The image below it (its file is in the same directory). */
  backing?: Source;
  /** The commands that made it, for the case's printout. */
  recipe: string[];
}

const KiB = 1024;
const MiB = 1024 * KiB;
export const SECRET = 'hunter2';

/** Runs a build step; a failed qemu-io step (a compressed write it refuses, say) is marked, not fatal. */
function run(tool: 'qemu-img' | 'qemu-io', args: string[], cwd: string, recipe: string[]): void {
  const r = spawnSync(oracle('10.0', tool), args, { cwd, encoding: 'utf8', timeout: 60_000 });
  const failed = r.status !== 0 || /failed|error/i.test(tool === 'qemu-io' ? r.stdout + r.stderr : '');
  recipe.push(`${tool} ${args.join(' ')}${failed ? `   # failed: ${(r.stderr || r.stdout).split('\n').find((l) => /fail|error/i.test(l)) ?? ''}` : ''}`);
  if (r.status !== 0 && tool === 'qemu-img') throw new Error(`source: ${tool} ${args.join(' ')}: ${r.stderr || r.stdout}`);
}

/** A disk size: often not whole clusters, sometimes tiny. */
export function randomSize(rng: Rng): number {
  const kind = rng.below(6);
  if (kind === 0) return 512 * (1 + rng.below(64));
  if (kind === 1) return MiB * (1 + rng.below(6));
  if (kind === 2) return MiB * (1 + rng.below(4)) + 512 * (1 + rng.below(300));
  if (kind === 3) return 64 * KiB * (1 + rng.below(40));
  if (kind === 4) return 1 + rng.below(3 * MiB);
  return 2 * MiB + 512 * rng.below(4096);
}

function createOptions(rng: Rng, format: string): string[] {
  const o: string[] = [];
  if (format === 'qcow2') {
    const v2 = rng.chance(0.2);
    if (v2) o.push('compat=0.10');
    const cluster = rng.pick([512, 4096, 16384, 65536, 65536, 262144, 2 * MiB]);
    if (cluster !== 65536) o.push(`cluster_size=${cluster}`);
    if (!v2 && cluster >= 16384 && rng.chance(0.2)) o.push('extended_l2=on');
    if (!v2 && rng.chance(0.2)) o.push('compression_type=zstd');
    if (!v2 && rng.chance(0.2)) o.push(`refcount_bits=${rng.pick([1, 2, 4, 8, 32, 64])}`);
  } else if (format === 'vmdk') {
    o.push(`subformat=${rng.pick(['monolithicSparse', 'monolithicSparse', 'streamOptimized', 'monolithicFlat', 'twoGbMaxExtentSparse'])}`);
  } else if (format === 'vpc') {
    if (rng.chance(0.3)) o.push('subformat=fixed');
    if (rng.chance(0.3)) o.push('force_size=on');
  } else if (format === 'vhdx') {
    if (rng.chance(0.3)) o.push(`block_size=${rng.pick([1, 2, 8])}M`);
    if (rng.chance(0.2)) o.push('subformat=fixed');
  } else if (format === 'vdi') {
    if (rng.chance(0.3)) o.push('static=on');
  } else if (format === 'qed') {
    if (rng.chance(0.3)) o.push(`cluster_size=${rng.pick([4096, 65536, 1 * MiB])}`);
  } else if (format === 'luks') {
    o.push('key-secret=sec0', 'iter-time=10');
  }
  return o;
}

/** qemu-io's commands: patterned writes, zero writes, compressed writes, discards. */
function writes(rng: Rng, format: string, subformat: string, size: number, cluster = 65536): string[] {
  const out: string[] = [];
  const sectors = Math.floor(size / 512);
  if (sectors === 0) return out;
  const count = rng.below(8);
  for (let i = 0; i < count; i++) {
    const start = rng.below(sectors);
    const len = 1 + rng.below(Math.min(sectors - start, rng.chance(0.5) ? 16 : 2048));
    const off = start * 512;
    const bytes = len * 512;
    const kind = rng.below(10);
    if (kind < 5) out.push(`write -P 0x${(1 + rng.below(255)).toString(16)} ${off} ${bytes}`);
    else if (kind < 6) out.push(`write -P 0 ${off} ${bytes}`);
    else if (kind < 8 && format !== 'vpc' && format !== 'vdi' && format !== 'parallels') out.push(`write -z ${off} ${bytes}`);
    else if (kind < 9 && (format === 'qcow2' || (format === 'vmdk' && subformat === 'streamOptimized'))) {
      // Compressed writes are whole clusters; qemu-io refuses others.
      const c = Math.floor(off / cluster) * cluster;
      if (c + cluster <= size) out.push(`write -c -P 0x${(1 + rng.below(255)).toString(16)} ${c} ${cluster}`);
    } else if (format === 'qcow2' || format === 'raw') out.push(`discard ${off} ${bytes}`);
  }
  return out;
}

function ioArgs(s: Source): string[] {
  if (s.format === 'luks') return ['--object', `secret,id=sec0,data=${SECRET}`, '--image-opts', `driver=luks,key-secret=sec0,file.filename=${s.name}`];
  return ['-f', s.format, s.name];
}

const READABLE = ['vdi', 'qed', 'parallels', 'qcow', 'luks', 'qcow2', 'raw'];

/**
 * A QED image stores no backing format (only "raw, do not probe"): qemu probes its backing file,
 * and reads a fixed VHD (no header at its start) as raw, which instar does only with
 * --unsafe-quirks (its documented refusal of the raw fallback).
 */
export const probesBacking = (s: Source): boolean => !!s.backing && ((s.format === 'qed' && s.backing.format === 'vpc') || probesBacking(s.backing));

/** One source image (maybe over a backing chain) in `dir`, named `stem`.<format>. */
export function makeSource(rng: Rng, dir: string, stem: string, depth = 0): Source {
  const format = rng.pick(depth > 0 ? ['raw', 'qcow2', 'vmdk', 'qed', 'vpc'] : READABLE);
  const size = format === 'luks' ? 512 * (1 + rng.below(8192)) : randomSize(rng);
  const name = `${stem}.${format}`;
  const recipe: string[] = [];
  const s: Source = { name, format, size, snapshots: [], bitmaps: [], recipe };
  const opts = createOptions(rng, format);
  const subformat = /subformat=(\w+)/.exec(opts.join(','))?.[1] ?? '';
  const cluster = Number(/cluster_size=(\d+)/.exec(opts.join(','))?.[1] ?? 65536);
  const args = ['create', '-q', '-f', format];
  if (format === 'luks') {
    s.secret = SECRET;
    args.push('--object', `secret,id=sec0,data=${SECRET}`);
  }
  // A backing file for qcow2/qed/vmdk tops (mixed formats below), at most two levels.
  if (depth < 2 && (format === 'qcow2' || format === 'qed') && rng.chance(0.3)) {
    s.backing = makeSource(rng, dir, `${stem}b`, depth + 1);
    recipe.push(...s.backing.recipe);
    args.push('-b', s.backing.name, '-F', s.backing.format);
  }
  if (opts.length) args.push('-o', opts.join(','));
  args.push(name);
  if (!(s.backing && rng.chance(0.5))) args.push(String(size));
  else s.size = s.backing.size;
  run('qemu-img', args, dir, recipe);
  if (format === 'raw' && size % 512 !== 0) s.size = size; // raw keeps an odd length
  else s.size = Math.ceil(s.size / 512) * 512;
  if (subformat === 'streamOptimized') {
    // qemu-io cannot write a streamOptimized file in place; qemu-img convert makes one from data.
    return s;
  }
  const ws = writes(rng, format, subformat, s.size, cluster);
  if (ws.length) run('qemu-io', [...ws.flatMap((w) => ['-c', w]), ...ioArgs(s)], dir, recipe);
  if (format === 'qcow2' && rng.chance(0.25)) {
    s.snapshots.push('snap1');
    run('qemu-img', ['snapshot', '-c', 'snap1', name], dir, recipe);
    const more = writes(rng, format, subformat, s.size, cluster);
    if (more.length) run('qemu-io', [...more.flatMap((w) => ['-c', w]), ...ioArgs(s)], dir, recipe);
  }
  if (format === 'qcow2' && !opts.includes('compat=0.10') && rng.chance(0.25)) {
    s.bitmaps.push('b0');
    run('qemu-img', ['bitmap', '--add', ...(rng.chance(0.3) ? ['-g', '512'] : []), name, 'b0'], dir, recipe);
    if (rng.chance(0.3)) {
      s.bitmaps.push('b1');
      run('qemu-img', ['bitmap', '--add', '--disable', name, 'b1'], dir, recipe);
    }
    const more = writes(rng, format, subformat, s.size, cluster);
    if (more.length) run('qemu-io', [...more.flatMap((w) => ['-c', w]), ...ioArgs(s)], dir, recipe);
  }
  return s;
}

/** The path of a source from a run directory beside it. */
export const fromRun = (s: Source) => join('..', s.name);

/** The image images.ts builds in `dir` (its top and the layers below), as a source. */
export function builtSource(rng: Rng, dir: string): Source {
  const built = buildImage(rng, dir, { maxSize: 8 * MiB });
  const asSource = (i: number): Source => {
    const l = built.layers[i];
    const r = spawnSync(oracle('10.0'), ['info', '--output=json', '-U', '-f', l.format, l.file], { cwd: dir, encoding: 'utf8' });
    const size = r.status === 0 ? (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size'] : (l.size ?? 0);
    return { name: l.file, format: l.format, size, snapshots: l.snapshots, bitmaps: l.bitmaps, backing: i > 0 ? asSource(i - 1) : undefined, recipe: i === built.layers.length - 1 ? built.recipe : [] };
  };
  return asSource(built.layers.length - 1);
}
