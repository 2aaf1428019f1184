// The random-image builder of the generative hunt (npm run hunt): valid images made by the oracles
// themselves — qemu-img create with random -o options, qemu-io writes (pattern, zero, compressed),
// discards, internal snapshots, persistent bitmaps, backing chains of mixed formats, odd sizes —
// so that the commands under test reach their ordinary paths rather than the error paths the
// mutation fuzzer hits. Everything comes from one Rng: the same seed builds the same image with
// the same oracle, and the recipe (the command lines, in order) says how to build it by hand.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Rng } from '../prng.ts';
import { oracle, type OracleVersion } from '../../helpers/oracles.ts';

export type ImageFormat = 'qcow2' | 'vmdk' | 'vpc' | 'vhdx' | 'raw';
export const IMAGE_FORMATS: readonly ImageFormat[] = ['qcow2', 'vmdk', 'vpc', 'vhdx', 'raw'];

/** One image of a chain (base first), as created. */
export interface Layer {
  /** File name inside the build directory (also what a backing reference stores). */
  file: string;
  format: ImageFormat;
  /** The size given to qemu-img create (bytes; qemu may round it up), undefined: the backing's. */
  size?: number;
  /** The -o options given to create (backing_file/backing_fmt excluded). */
  options: Record<string, string>;
  snapshots: string[];
  bitmaps: string[];
  /** qcow2 external data file, when there is one. */
  dataFile?: string;
  /** qemu-io was made to abort after its writes (a dirty lazy-refcounts image, leaks). */
  aborted: boolean;
}

export interface BuiltImage {
  dir: string;
  /** Base first; the last one is the image the commands run on. */
  layers: Layer[];
  top: Layer;
  /** Every file in the directory after the build (extents, data files included). */
  files: string[];
  /** The command lines that built it, in order (cwd = dir); failed steps are marked so. */
  recipe: string[];
  /** The oracle whose qemu-img and qemu-io built it. */
  builder: OracleVersion;
}

export interface ImageWishes {
  /** Formats the top image may have (default: all). */
  formats?: readonly ImageFormat[];
  /** Chance of a backing chain under the top image (default 0.35; only qcow2/vmdk tops have one). */
  chainChance?: number;
  /** Largest virtual size (default 64 MiB; preallocated images stay far smaller). */
  maxSize?: number;
  /** Chance of a big sparse image instead (up to 64 GiB, never preallocated; default 0.12). */
  bigChance?: number;
  /** Allow qemu-io aborts that leave a qcow2 dirty or leaking (default true). */
  oddStates?: boolean;
  /** Builder oracle (default: chosen by the Rng). */
  builder?: OracleVersion;
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** A virtual size: round powers and multiples, sector-odd and byte-odd ones (qemu rounds some up). */
export function randomSize(rng: Rng, max: number): number {
  const kind = rng.below(5);
  let size: number;
  if (kind === 0) size = 2 ** (16 + rng.below(Math.max(1, Math.log2(max) - 15)));
  else if (kind === 1) size = (1 + rng.below(Math.max(1, max / MiB))) * MiB;
  else if (kind === 2) size = (1 + rng.below(max / 512)) * 512;
  else if (kind === 3) size = 1 + rng.below(max);
  else size = (1 + rng.below(max / (100 * 1000))) * 100 * 1000;
  return Math.min(Math.max(size, 1), max);
}

/** qemu-img create -o options for a format (a random, valid combination). */
function createOptions(rng: Rng, format: ImageFormat, size: number, file: string, hasBacking: boolean): Record<string, string> {
  const o: Record<string, string> = {};
  if (format === 'qcow2') {
    const v2 = rng.chance(0.2);
    if (v2) o.compat = '0.10';
    else if (rng.chance(0.3)) o.compat = '1.1';
    const cluster = 2 ** (9 + rng.below(13));
    if (rng.chance(0.6)) o.cluster_size = String(cluster);
    const clusterSize = Number(o.cluster_size ?? 65536);
    if (!v2) {
      if (clusterSize >= 16 * KiB && rng.chance(0.25)) o.extended_l2 = 'on';
      if (rng.chance(0.3)) o.compression_type = rng.pick(['zlib', 'zstd']);
      if (rng.chance(0.35)) o.refcount_bits = String(2 ** rng.below(7));
      if (rng.chance(0.2)) o.lazy_refcounts = 'on';
      if (!hasBacking && rng.chance(0.12)) {
        o.data_file = file.replace(/\.qcow2$/, '.data');
        if (rng.chance(0.5)) o.data_file_raw = 'on';
      }
    }
    // Preallocation writes the whole disk: only on small images.
    if (size <= 16 * MiB && rng.chance(0.2)) o.preallocation = rng.pick(['metadata', 'falloc', 'full']);
    else if (rng.chance(0.05)) o.preallocation = 'off';
  } else if (format === 'vmdk') {
    const sub = rng.pick(['monolithicSparse', 'monolithicSparse', 'streamOptimized', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat']);
    if (sub !== 'monolithicSparse' || rng.chance(0.3)) o.subformat = sub;
    if (rng.chance(0.3)) o.adapter_type = rng.pick(['ide', 'buslogic', 'lsilogic', 'legacyESX']);
    if (rng.chance(0.2)) o.hwversion = rng.pick(['4', '6', '7']);
    else if (rng.chance(0.1)) o.compat6 = 'on';
    if (sub.includes('Sparse') && rng.chance(0.3)) o.zeroed_grain = 'on';
  } else if (format === 'vpc') {
    if (rng.chance(0.5)) o.subformat = rng.pick(['dynamic', 'fixed']);
    if (rng.chance(0.3)) o.force_size = 'on';
  } else if (format === 'vhdx') {
    if (rng.chance(0.4)) o.block_size = String(2 ** rng.below(9) * MiB);
    if (rng.chance(0.3)) o.log_size = String((1 + rng.below(4)) * MiB);
    if (rng.chance(0.4)) o.subformat = rng.pick(['dynamic', 'fixed']);
    if (rng.chance(0.3)) o.block_state_zero = rng.pick(['on', 'off']);
  } else if (rng.chance(0.15) && size <= 16 * MiB) {
    o.preallocation = rng.pick(['falloc', 'full']);
  }
  return o;
}

/** An offset/length pair inside [0, size): aligned to a sector, a cluster or nothing at all. */
function randomRange(rng: Rng, size: number, grain: number): [number, number] {
  const align = rng.pick([1, 512, 512, 4096, grain, grain]);
  const start = Math.floor(rng.below(size) / align) * align;
  const maxLen = rng.pick([4 * KiB, 64 * KiB, 256 * KiB, 2 * MiB]);
  let len = Math.max(align, Math.floor((1 + rng.below(maxLen)) / align) * align);
  if (start + len > size) len = size - start;
  return [start, Math.max(len, 1)];
}

/** qemu-io commands that change content: pattern writes (zero pattern too), zero writes, discards. */
function ioCommands(rng: Rng, layer: Layer, size: number): string[] {
  const cmds: string[] = [];
  const grain = layer.format === 'qcow2' ? Number(layer.options.cluster_size ?? 65536) : 64 * KiB;
  const compressible = layer.format === 'qcow2' || layer.options.subformat === 'streamOptimized';
  for (let n = 1 + rng.below(8); n > 0; n--) {
    const [off, len] = randomRange(rng, size, grain);
    const what = rng.below(10);
    if (what < 5) cmds.push(`write -P 0x${rng.below(256).toString(16)} ${off} ${len}`);
    else if (what === 5) cmds.push(`write -P 0 ${off} ${len}`);
    else if (what === 6) cmds.push(`write -z ${rng.chance(0.5) ? '-u ' : ''}${off} ${len}`);
    else if (what === 7) cmds.push(`discard ${off} ${len}`);
    else if (compressible) {
      // Compressed writes want cluster-aligned starts; the length may end mid-cluster at the end.
      const start = Math.floor(off / grain) * grain;
      cmds.push(`write -c -P 0x${rng.below(256).toString(16)} ${start} ${Math.min(grain * (1 + rng.below(4)), size - start)}`);
    } else cmds.push(`write -P 0x${rng.below(256).toString(16)} ${off} ${len}`);
  }
  return cmds;
}

class Builder {
  readonly recipe: string[] = [];
  constructor(
    readonly dir: string,
    readonly version: OracleVersion,
  ) {}

  /** Runs a tool in dir; a failing step is kept in the recipe (marked) and reported as false. */
  run(tool: 'qemu-img' | 'qemu-io', args: string[], allowAbort = false): boolean {
    const shown = `${tool}-${this.version} ${args.map((a) => (/^[\w./=,:-]+$/.test(a) ? a : `'${a}'`)).join(' ')}`;
    // ulimit -c 0: an abort is wanted (odd states), its core file is not.
    const r = spawnSync('/bin/sh', ['-c', 'ulimit -c 0; exec "$0" "$@"', oracle(this.version, tool), ...args], { cwd: this.dir, encoding: 'utf8', timeout: 60_000 });
    const ok = r.status === 0 || (allowAbort && r.signal === 'SIGABRT') || (allowAbort && r.status === 134);
    this.recipe.push(ok ? shown : `${shown}   # failed: ${(r.stderr || r.stdout || r.error?.message || `signal ${r.signal}`).trim().split('\n')[0]}`);
    return ok;
  }
}

function optionString(o: Record<string, string>): string[] {
  const list = Object.entries(o).map(([k, v]) => `${k}=${v}`);
  return list.length > 0 ? ['-o', list.join(',')] : [];
}

/** Creates one layer; returns false if qemu-img refused the combination. */
function createLayer(b: Builder, layer: Layer, backing?: Layer): boolean {
  const args = ['create', '-q', '-f', layer.format, ...optionString(layer.options)];
  if (backing) args.push('-b', backing.file, '-F', backing.format);
  args.push(layer.file);
  if (layer.size !== undefined) args.push(String(layer.size));
  return b.run('qemu-img', args);
}

/** Writes, snapshots and bitmaps on a created layer, interleaved at random. */
function fillLayer(rng: Rng, b: Builder, layer: Layer, size: number, wishes: ImageWishes): void {
  const qcow2v3 = layer.format === 'qcow2' && layer.options.compat !== '0.10';
  if (qcow2v3 && rng.chance(0.2)) addBitmap(rng, b, layer);
  for (let round = rng.below(4); round > 0; round--) {
    const abort = wishes.oddStates !== false && layer.format === 'qcow2' && rng.chance(0.06);
    const cmds = ioCommands(rng, layer, size);
    if (abort) {
      cmds.push('abort');
      layer.aborted = true;
    }
    b.run('qemu-io', ['-f', layer.format, ...cmds.flatMap((c) => ['-c', c]), layer.file], abort);
    if (abort) return;
    // Internal snapshots (no data file: qemu refuses them there) and bitmaps between rounds.
    if (layer.format === 'qcow2' && layer.dataFile === undefined && rng.chance(0.3)) {
      const name = rng.chance(0.8) ? `snap${layer.snapshots.length + 1}` : `s ${rng.below(1000)}`;
      if (b.run('qemu-img', ['snapshot', '-c', name, layer.file])) layer.snapshots.push(name);
    }
    if (qcow2v3 && rng.chance(0.1)) addBitmap(rng, b, layer);
  }
  if (layer.snapshots.length > 1 && rng.chance(0.2)) {
    const gone = rng.pick(layer.snapshots);
    if (b.run('qemu-img', ['snapshot', '-d', gone, layer.file])) layer.snapshots = layer.snapshots.filter((s) => s !== gone);
  }
}

function addBitmap(rng: Rng, b: Builder, layer: Layer): void {
  const name = `b${layer.bitmaps.length}`;
  const args = ['bitmap', '--add', ...(rng.chance(0.3) ? ['-g', String(2 ** (9 + rng.below(8)))] : []), ...(rng.chance(0.2) ? ['--disable'] : []), layer.file, name];
  if (b.run('qemu-img', args)) layer.bitmaps.push(name);
}

const EXT: Record<ImageFormat, string> = { qcow2: 'qcow2', vmdk: 'vmdk', vpc: 'vhd', vhdx: 'vhdx', raw: 'raw' };

/**
 * Builds a random valid image (maybe a chain) in the empty directory `dir`. A create that qemu-img
 * refuses (an option combination it does not take) is retried with no options, so that a build
 * always yields an image; the recipe shows both.
 */
export function buildImage(rng: Rng, dir: string, wishes: ImageWishes = {}): BuiltImage {
  const version = wishes.builder ?? (rng.chance(0.5) ? '10.0' : '7.2');
  const b = new Builder(dir, version);
  const maxSize = rng.chance(wishes.bigChance ?? 0.12) ? 64 * 1024 * MiB : (wishes.maxSize ?? 64 * MiB);
  const topFormat = rng.pick(wishes.formats ?? IMAGE_FORMATS);
  const layers: Layer[] = [];
  // A chain: qcow2 tops take any backing format; vmdk tops take only vmdk backings.
  let depth = 0;
  if ((topFormat === 'qcow2' || topFormat === 'vmdk') && rng.chance(wishes.chainChance ?? 0.35)) depth = 1 + rng.below(2);
  const formats: ImageFormat[] = [];
  for (let i = 0; i < depth; i++) formats.push(topFormat === 'vmdk' ? 'vmdk' : i === 0 ? rng.pick(IMAGE_FORMATS) : 'qcow2');
  formats.push(topFormat);
  let backingSize = 0;
  formats.forEach((format, i) => {
    const backing = layers[i - 1];
    const name = i === formats.length - 1 ? 'top' : `base${i}`;
    // Overlays: the backing's size (no size given), or smaller or larger than it.
    const size = backing === undefined || rng.chance(0.4) ? randomSize(rng, maxSize) : undefined;
    const file = `${name}.${EXT[format]}`;
    const layer: Layer = { file, format, size, options: createOptions(rng, format, size ?? backingSize, file, backing !== undefined), snapshots: [], bitmaps: [], aborted: false };
    if (format === 'vmdk' && backing !== undefined) {
      // vmdk overlays: only sparse subformats take a backing file.
      layer.options.subformat = 'monolithicSparse';
      delete layer.options.zeroed_grain;
    }
    if (!createLayer(b, layer, backing)) {
      layer.options = {};
      if (!createLayer(b, layer, backing)) throw new Error(`cannot create ${file}:\n${b.recipe.join('\n')}`);
    }
    layer.dataFile = layer.options.data_file;
    backingSize = size ?? backingSize;
    fillLayer(rng, b, layer, virtualSizeOf(b, layer, backingSize), wishes);
    layers.push(layer);
  });
  const files = readdirSync(dir).filter((f) => statSync(join(dir, f)).isFile());
  return { dir, layers, top: layers[layers.length - 1], files, recipe: b.recipe, builder: version };
}

/** The size qemu made the image (it rounds some formats up): what qemu-io may write to. */
function virtualSizeOf(b: Builder, layer: Layer, fallback: number): number {
  const r = spawnSync(oracle(b.version), ['info', '--output=json', '-U', '-f', layer.format, layer.file], { cwd: b.dir, encoding: 'utf8' });
  if (r.status !== 0) return fallback;
  return (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size'];
}

/** The recipe as one printable block, with the seed that rebuilds it. */
export function describeBuild(built: BuiltImage, seed: number): string {
  return [`# image seed ${seed} (builder qemu ${built.builder}), in ${built.dir}`, ...built.recipe].join('\n');
}
