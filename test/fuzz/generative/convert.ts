// The generative convert hunt: random valid source images (sources.ts), a random qemu-img
// convert command line over them, run by instar (the built CLI, from a private copy of dist/) and
// by qemu-img 7.2 and 10.0, each in a directory of its own beside the sources. Status, stdout and
// stderr must be equal; the files left behind equal byte for byte with qemu's random bytes masked
// (outputs.ts), or by content (compare + check) where the bytes may differ: compressed output,
// LUKS key material, preallocation=falloc/full. Every case prints its seed: `--seed S --cases 1`
// replays it.
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Rng } from '../prng.ts';
import { VERSIONS, oracle, type OracleVersion } from '../../helpers/oracles.ts';
import { runInstarCli, type ToolResult } from '../diff-tools.ts';
import { runQemu, type HuntArea, type Mismatch } from './area.ts';
import { compareBytes, compareContent, compareNames, filesIn, type FileCompare } from './outputs.ts';
import { SECRET, builtSource, fromRun, makeSource, probesBacking, randomSize, type Source } from './sources.ts';

export interface GenCase {
  seed: number;
  sources: Source[];
  argv: string[];
  /** The target's format and how its files are compared. */
  format: string;
  compare: FileCompare;
  /** A target made before the run (convert -n), copied into every run directory. */
  premade?: string;
  /** instar runs in its sandbox (else --sandbox=none). */
  sandboxed: boolean;
  /**
   * --unsafe-quirks for instar: a source left to probing (no -f, no --image-opts) may be raw,
   * which qemu reads by its raw fallback and instar refuses by default (a documented difference).
   */
  unsafeQuirks?: boolean;
}

const KiB = 1024;
/** Sources above this get no option that allocates the whole target (the disk here is shared). */
export const BIG_BYTES = 256 * 1024 * KiB;
const FULLY_ALLOCATED = /^(preallocation=(falloc|full)|subformat=fixed|static=on)$/;
const TARGETS = ['raw', 'raw', 'qcow2', 'qcow2', 'qcow2', 'vmdk', 'vmdk', 'vpc', 'vhdx', 'luks', 'qed', 'vdi', 'parallels', 'qcow'];
const EXT: Record<string, string> = { raw: 'img' };
export const targetName = (format: string) => `out.${EXT[format] ?? format}`;

/** -o options for a new target of `format`: mostly valid, now and then a bad one. */
export function targetOptions(rng: Rng, format: string, size: number): string[] {
  const o: string[] = [];
  if (format === 'qcow2') {
    const v2 = rng.chance(0.2);
    if (v2) o.push('compat=0.10');
    else if (rng.chance(0.1)) o.push('compat=1.1');
    const cluster = rng.pick([512, 4096, 8192, 65536, 65536, 65536, 1024 * KiB, 2048 * KiB]);
    if (cluster !== 65536 || rng.chance(0.1)) o.push(`cluster_size=${cluster}`);
    if (!v2 && cluster >= 16384 && rng.chance(0.25)) o.push('extended_l2=on');
    if (!v2 && rng.chance(0.2)) o.push(`compression_type=${rng.pick(['zlib', 'zstd'])}`);
    if (rng.chance(0.2)) o.push(`refcount_bits=${v2 ? 16 : rng.pick([1, 2, 4, 8, 16, 32, 64])}`);
    if (!v2 && rng.chance(0.15)) o.push('lazy_refcounts=on');
    if (rng.chance(0.15)) o.push(`preallocation=${rng.pick(['off', 'metadata', 'metadata', 'falloc', 'full'])}`);
    if (!v2 && rng.chance(0.1)) o.push('data_file=out.data', ...(rng.chance(0.5) ? ['data_file_raw=on'] : []));
  } else if (format === 'vmdk') {
    const sub = rng.pick(['monolithicSparse', 'streamOptimized', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat']);
    if (sub !== 'monolithicSparse' || rng.chance(0.2)) o.push(`subformat=${sub}`);
    if (rng.chance(0.2)) o.push(`adapter_type=${rng.pick(['ide', 'buslogic', 'lsilogic', 'legacyESX'])}`);
    if (rng.chance(0.15)) o.push(`hwversion=${rng.pick(['4', '6', '7', 'undefined'])}`);
    if (rng.chance(0.2)) o.push('zeroed_grain=on');
    if (rng.chance(0.1)) o.push('compat6=on');
  } else if (format === 'vpc') {
    if (rng.chance(0.4)) o.push(`subformat=${rng.pick(['dynamic', 'fixed'])}`);
    if (rng.chance(0.3)) o.push('force_size=on');
  } else if (format === 'vhdx') {
    if (rng.chance(0.3)) o.push(`subformat=${rng.pick(['dynamic', 'fixed'])}`);
    if (rng.chance(0.3)) o.push(`block_size=${rng.pick(['1M', '2M', '8M', '32M'])}`);
    if (rng.chance(0.2)) o.push(`log_size=${rng.pick(['1M', '2M', '4M'])}`);
    if (rng.chance(0.3)) o.push(`block_state_zero=${rng.pick(['on', 'off'])}`);
  } else if (format === 'luks') {
    o.push('key-secret=tsec', 'iter-time=10');
    if (rng.chance(0.2)) o.push(`cipher-alg=${rng.pick(['aes-128', 'aes-256', 'twofish-256', 'serpent-256'])}`);
    if (rng.chance(0.15)) o.push(`cipher-mode=${rng.pick(['xts', 'cbc'])}`, `ivgen-alg=${rng.pick(['plain64', 'essiv'])}`, 'ivgen-hash-alg=sha256');
  } else if (format === 'vdi') {
    if (rng.chance(0.3)) o.push('static=on');
  } else if (format === 'qed') {
    if (rng.chance(0.3)) o.push(`cluster_size=${rng.pick([4096, 65536, 1024 * KiB])}`);
    if (rng.chance(0.2)) o.push(`table_size=${rng.pick([1, 4, 16])}`);
  } else if (format === 'parallels') {
    if (rng.chance(0.3)) o.push(`cluster_size=${rng.pick(['4k', '64k', '1M'])}`);
  }
  if (rng.chance(0.04)) o.push(rng.pick(['no_such_option=1', 'cluster_size=3000', 'subformat=bogus', `size=${size}`]));
  return o;
}

function sourceArgs(sources: Source[], imageOpts: boolean, withFormat: boolean): string[] {
  if (imageOpts) return ['--image-opts', ...sources.map((s) => (s.format === 'luks' ? `driver=luks,key-secret=sec0,file.filename=${fromRun(s)}` : `driver=${s.format},file.filename=${fromRun(s)}`))];
  const f = withFormat && sources.every((s) => s.format === sources[0].format) ? ['-f', sources[0].format] : [];
  return [...f, ...sources.map(fromRun)];
}

/** A pre-made target for -n (in `dir`, named premade.<ext>): qemu-img 10.0 create, maybe written to. */
function premadeTarget(rng: Rng, dir: string, format: string, size: number): string {
  const name = `premade.${EXT[format] ?? format}`;
  const opts = format === 'vmdk' ? [] : format === 'luks' ? ['--object', `secret,id=tsec,data=${SECRET}`, '-o', 'key-secret=tsec,iter-time=10'] : [];
  const args = ['create', '-q', '-f', format, ...opts, name, String(size)];
  const r = spawnSync(oracle('10.0'), args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`premade: ${r.stderr}`);
  if (format !== 'luks' && rng.chance(0.5)) {
    const w = spawnSync(oracle('10.0', 'qemu-io'), ['-f', format, '-c', `write -P 0x5a 0 ${Math.min(size, 65536) & ~511}`, name], { cwd: dir, encoding: 'utf8' });
    if (w.status !== 0) throw new Error(`premade write: ${w.stderr}`);
  }
  return name;
}

/** Builds case `seed`: its sources in `dir` and the command line. */
export function buildConvertCase(seed: number, dir: string): GenCase {
  const rng = new Rng(seed);
  const sources = [rng.chance(0.7) ? builtSource(rng, dir) : makeSource(rng, dir, 'src')];
  if (rng.chance(0.08)) sources.push(makeSource(rng, dir, 'src2'));
  const total = sources.reduce((n, s) => n + s.size, 0);
  // A big sparse source (images.ts makes some up to 64 GiB): nothing that writes every byte.
  const big = total > BIG_BYTES;
  // A LUKS target encrypts every sector, zeros too: not from a big source.
  let format = rng.pick(big ? TARGETS.filter((t) => t !== 'luks') : TARGETS);
  const argv = ['convert'];
  const flags: string[] = [];
  const secretNeeded = sources.some((s) => s.format === 'luks') || format === 'luks';
  const imageOpts = sources.some((s) => s.format === 'luks') || rng.chance(0.08);
  if (secretNeeded) flags.push('--object', `secret,id=sec0,data=${SECRET}`);
  if (format === 'luks') flags.push('--object', `secret,id=tsec,data=${SECRET}`);
  const compressible = ['qcow2', 'vmdk', 'qcow'].includes(format);
  let compressed = rng.chance(compressible ? 0.2 : 0.02);
  let premade: string | undefined;
  // -n into a VDI, VHD or LUKS volume writes its zeros too: not from a big source.
  const into = !big && (rng.chance(0.15) && !['luks'].includes(format) || (format === 'luks' && rng.chance(0.05)));
  let compare: FileCompare = 'bytes';
  // -n -c into a qcow2 or a qcow: instar refuses it (README: not yet), a known difference (qemu
  // writes the qcow's clusters and then fails with status 1 and no message).
  if (into && (format === 'qcow2' || format === 'qcow')) compressed = false;
  if (into) {
    const size = rng.chance(0.85) ? total : Math.max(512, Math.ceil(randomSize(rng) / 512) * 512);
    premade = premadeTarget(rng, dir, format, Math.ceil(size / 512) * 512);
    flags.push('-n');
    if (rng.chance(0.3)) flags.push('--target-is-zero');
  } else {
    const o = targetOptions(rng, format, total).filter((x) => !big || !FULLY_ALLOCATED.test(x));
    if (format === 'vmdk' && o.some((x) => /subformat=(streamOptimized)/.test(x)) && !compressed) compare = 'content';
    if (o.some((x) => /preallocation=(falloc|full)/.test(x))) compare = 'content';
    if (o.length) flags.push('-o', o.join(','));
    if (rng.chance(0.05)) flags.push('-o', rng.pick(['cluster_size=4096', 'compat=1.1', 'subformat=fixed']));
  }
  if (compressed) {
    flags.push('-c');
    compare = 'content';
  }
  if (format === 'luks') compare = 'content';
  if (rng.chance(0.35)) flags.push('-S', rng.pick([...(big ? [] : ['0']), '512', '4k', '4096', '1536', '3k', '64k', '1M', '7', '513', '0x200', '8b', '2048']));
  if (rng.chance(0.15)) flags.push('-m', String(1 + rng.below(16)));
  if (rng.chance(0.15)) {
    flags.push('-W');
    // qemu's out-of-order writes allocate in a different order from run to run (measured: parallels, qcow2).
    if (format !== 'raw') compare = 'content';
  }
  if (rng.chance(0.12)) flags.push('-p');
  if (rng.chance(0.05)) flags.push('-q');
  if (rng.chance(0.06)) flags.push('-U');
  if (rng.chance(0.06)) flags.push('-C');
  if (rng.chance(0.06)) flags.push('-t', rng.pick(['none', 'writeback', 'unsafe', 'directsync', 'writethrough']));
  if (rng.chance(0.06)) flags.push('-T', rng.pick(['none', 'writeback', 'unsafe', 'directsync', 'writethrough']));
  const src = sources[0];
  if (src.snapshots.length && rng.chance(0.5)) {
    const snap = rng.pick(src.snapshots);
    flags.push(...rng.pick([['-l', snap], ['-l', `snapshot.name=${snap}`], ['-l', 'snapshot.id=1'], ['-s', snap], ['-l', 'nosuch']]));
  }
  if (src.bitmaps.length && rng.chance(0.6)) flags.push('--bitmaps', ...(rng.chance(0.3) ? ['--skip-broken-bitmaps'] : []));
  if (!into && src.backing && rng.chance(0.35)) flags.push('-B', fromRun(src.backing), ...(rng.chance(0.85) ? ['-F', src.backing.format] : []));
  else if (!into && rng.chance(0.03)) flags.push('-o', `backing_file=${fromRun(src)},backing_fmt=${src.format}`);
  // Protocol drivers as -O (file, host_device) are left out: instar refuses them (not yet), a known difference.
  if (rng.chance(0.02)) format = 'bogus';
  argv.push(...flags, ...sourceArgs(sources, imageOpts, src.format === 'raw' || rng.chance(0.7)), '-O', format);
  argv.push(premade ? targetName(format) : targetName(format));
  // Fisher-Yates would reorder operands; getopt permutes options, so a few options at the end are fine too.
  const probed = !argv.includes('-f') && !argv.includes('--image-opts');
  return { seed, sources, argv, format, compare, premade, sandboxed: rng.chance(0.25), unsafeQuirks: probed || sources.some(probesBacking) };
}

/** A progress line of qemu-img's -p. */
const PROGRESS = /\s*\(\d+\.\d\d\/100%\)\r/g;
/** qemu's node names (#blockNNN) count its nodes and vary from run to run. */
const nodeNames = (t: string) => t.replace(/#block\d+/g, '#blockN');

/** Runs one tool's side of a case in `base`/`label` (with the pre-made target copied in). */
async function side(c: GenCase, base: string, label: string, tool: 'instar' | OracleVersion, version: OracleVersion, retries = 3): Promise<{ dir: string; r: ToolResult }> {
  const dir = join(base, label);
  mkdirSync(dir);
  if (c.premade) copyFileSync(join(base, c.premade), join(dir, targetName(c.format)));
  const r = tool === 'instar'
    ? await runInstarCli(['--allow-path', base, ...c.argv], dir, { version, sandboxed: c.sandboxed, unsafeQuirks: c.unsafeQuirks === true })
    : await runQemu(tool, c.argv, dir);
  // qemu 7.2's LUKS create fails at random here (FACTS.md): run it again, in a clean directory.
  if (tool !== 'instar' && retries > 0 && /Unable to get accurate CPU usage/.test(r.stderr)) {
    rmSync(dir, { recursive: true, force: true });
    return side(c, base, label, tool, version, retries - 1);
  }
  return { dir, r };
}

/** Both oracles and instar under both profiles: what differs (nothing when they agree). */
export async function runGenCase(c: GenCase, base: string): Promise<Mismatch[]> {
  const out: Mismatch[] = [];
  const command = c.argv.join(' ');
  // -p with -W or -m > 1: qemu's coroutines finish chunks in a different order on every run, so
  // two qemu runs print different steps; only the rest of stdout is compared.
  const m = c.argv.indexOf('-m');
  const noisyProgress = c.argv.includes('-p') && (c.argv.includes('-W') || (m >= 0 && Number(c.argv[m + 1]) > 1));
  // -W: which write fails first varies between qemu's own runs (measured: bytes 196608, 32768,
  // 8192 in four runs of campaign 7300000 case 200; 0 without -W), so its offset is not compared.
  const outOfOrder = c.argv.includes('-W');
  for (const version of VERSIONS) {
    const q = await side(c, base, `q${version}`, version, version);
    const i = await side(c, base, `i${version}`, 'instar', version);
    // qemu's own limits (instar's too, then: campaign 16160000 case 189): nothing to compare.
    if (q.r.timedOut) continue;
    if (i.r.timedOut) {
      out.push({ command, version, what: 'hang', qemu: `status ${q.r.status}`, instar: 'timed out' });
      continue;
    }
    // qemu 7.2's PBKDF2 timing flake, after side()'s retries: nothing to compare.
    if (/Unable to get accurate CPU usage/.test(q.r.stderr)) continue;
    // qemu's qed driver aborts on -W's out-of-order allocating writes (a known qemu bug, not copied).
    if (q.r.signal === 'SIGABRT' && /qed_aio_write_alloc: Assertion/.test(q.r.stderr)) continue;
    const before = out.length;
    const stdout = (t: string) => (noisyProgress ? t.replace(PROGRESS, '') : t);
    if (stdout(i.r.stdout) !== stdout(q.r.stdout)) out.push({ command, version, what: 'stdout', qemu: q.r.stdout, instar: i.r.stdout });
    const stderr = (t: string) => (outOfOrder ? nodeNames(t).replace(/(writing|reading) at byte \d+/g, '$1 at byte N') : nodeNames(t));
    if (stderr(i.r.stderr) !== stderr(q.r.stderr)) out.push({ command, version, what: 'stderr', qemu: q.r.stderr, instar: i.r.stderr });
    if (i.r.status !== q.r.status) out.push({ command, version, what: 'status', qemu: String(q.r.status), instar: String(i.r.status) });
    if (out.length > before) continue;
    // A failed run: instar removes a target it made and could not finish (DESIGN: no half-written
    // output left; qemu leaves it), else the partial files compare by name where their bytes may
    // differ anyway.
    const failed = q.r.status !== 0;
    const files = failed && filesIn(i.dir).length === 0 ? []
      : c.compare === 'bytes' ? compareBytes(i.dir, q.dir, c.format)
      : failed ? compareNames(i.dir, q.dir) : await compareContent(i.dir, q.dir, c.format, SECRET, targetName(c.format));
    if (files.length) out.push({ command, version, what: 'file', qemu: `${c.compare} comparison`, instar: files.join('\n') });
  }
  return out;
}

export function recipeOf(c: GenCase): string[] {
  return [...c.sources.flatMap((s) => s.recipe), ...(c.premade ? [`(premade ${c.premade}, copied as ${targetName(c.format)})`] : []), `qemu-img ${c.argv.join(' ')}   [instar ${c.sandboxed ? 'sandboxed' : '--sandbox=none'}${c.unsafeQuirks ? ' --unsafe-quirks' : ''}]`];
}

export const area: HuntArea = {
  async runCase(seed, dir) {
    const c = buildConvertCase(seed, dir);
    return { recipe: recipeOf(c), commands: 2, mismatches: await runGenCase(c, dir) };
  },
};
