// Random valid images of the formats the shared builder (images.ts) does not make: vdi (static and
// dynamic), qed (cluster_size, table_size, backing files), qcow v1 (backing files), parallels,
// LUKS1 volumes (cipher, mode, ivgen, hash, iter-time) and qcow2 with encrypt.format=luks — all
// made by the oracles (qemu-img create, qemu-io writes) — and raw-looking files written here: a
// plain one, one with an MBR, one with a GPT, an ISO 9660 one. One Rng; the recipe rebuilds it.
import { spawnSync } from 'node:child_process';
import { openSync, writeSync, closeSync, ftruncateSync, writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import { buildBochs } from '../../formats/bochs/build.ts';
import { buildCloop } from '../../formats/cloop/build.ts';
import { buildDmg, mishBlock, UDIG, UDLE, UDRW, UDZE, UDZO, type ChunkEntry } from '../../formats/dmg/build.ts';
import { join } from 'node:path';
import type { Rng } from '../prng.ts';
import { oracle, type OracleVersion } from '../../helpers/oracles.ts';

export type OtherFormat = 'vdi' | 'qed' | 'qcow' | 'parallels' | 'luks' | 'qcow2-luks' | 'mbr' | 'gpt' | 'iso' | 'plain' | 'qcow-aes' | 'qcow2-aes' | 'bochs' | 'cloop' | 'dmg';
export const OTHER_FORMATS: readonly OtherFormat[] = ['vdi', 'vdi', 'qed', 'qed', 'qcow', 'qcow', 'parallels', 'parallels', 'luks', 'luks', 'qcow2-luks', 'qcow2-luks', 'mbr', 'gpt', 'iso', 'plain', 'qcow-aes', 'qcow2-aes', 'bochs', 'cloop', 'dmg'];

export const PASSWORD = 'hunt';
/** The secret object every encrypted image is opened with. */
export const SECRET_OBJECT = `secret,id=sec0,data=${PASSWORD}`;

export interface OtherImage {
  file: string;
  /** The driver name qemu gives it ('raw' for the raw-looking ones, 'qcow2' for qcow2-luks). */
  driver: string;
  kind: OtherFormat;
  size: number;
  encrypted: boolean;
  /** Files below it (backing), base first. */
  backing: { file: string; driver: string }[];
  recipe: string[];
  builder: OracleVersion;
}

const KiB = 1024;
const MiB = 1024 * KiB;

function size(rng: Rng): number {
  const kind = rng.below(5);
  if (kind === 0) return 512 * (1 + rng.below(200));
  if (kind === 1) return MiB * (1 + rng.below(24));
  if (kind === 2) return MiB * (1 + rng.below(8)) + 512 * rng.below(4000);
  if (kind === 3) return 1 + rng.below(6 * MiB);
  return 64 * KiB * (1 + rng.below(100));
}

class Steps {
  readonly recipe: string[] = [];
  constructor(
    readonly dir: string,
    readonly version: OracleVersion,
  ) {}

  run(tool: 'qemu-img' | 'qemu-io', args: string[]): boolean {
    // cwd = the case directory: relative names qemu creates land there, never in the repo.
    let r = spawnSync(oracle(this.version, tool), args, { cwd: this.dir, encoding: 'utf8', timeout: 60_000 });
    // qemu 7.2 times its PBKDF2 by CPU time and now and then measures nothing: try again.
    for (let retry = 0; retry < 4 && /Unable to get accurate CPU usage/.test(r.stderr); retry++) r = spawnSync(oracle(this.version, tool), args, { cwd: this.dir, encoding: 'utf8', timeout: 60_000 });
    const failed = r.status !== 0 || (tool === 'qemu-io' && /failed|error/i.test(r.stdout + r.stderr));
    this.recipe.push(`${tool}-${this.version} ${args.map((a) => (/^[\w./=,:-]+$/.test(a) ? a : `'${a}'`)).join(' ')}${failed ? `   # failed: ${(r.stderr || r.stdout).trim().split('\n')[0]}` : ''}`);
    return r.status === 0;
  }
}

/** qemu-io's way to name an image (encrypted ones through --image-opts). */
function ioTarget(file: string, driver: string, encrypted: boolean): string[] {
  if (!encrypted) return ['-f', driver, file];
  const key = driver === 'luks' ? 'key-secret' : 'encrypt.key-secret';
  return ['--object', SECRET_OBJECT, '--image-opts', `driver=${driver},${key}=sec0,file.filename=${file}`];
}

function writes(rng: Rng, s: Steps, file: string, driver: string, encrypted: boolean, length: number, grain: number, compressible: boolean): void {
  const cmds: string[] = [];
  for (let n = rng.below(7); n > 0; n--) {
    const align = rng.pick([1, 512, 512, grain, grain]);
    const start = Math.floor(rng.below(length) / align) * align;
    let len = Math.max(align, Math.floor((1 + rng.below(rng.pick([4 * KiB, 64 * KiB, 2 * MiB]))) / align) * align);
    len = Math.max(1, Math.min(len, length - start));
    const what = rng.below(10);
    if (what < 5) cmds.push(`write -P 0x${rng.below(256).toString(16)} ${start} ${len}`);
    else if (what === 5) cmds.push(`write -P 0 ${start} ${len}`);
    else if (what === 6) cmds.push(`write -z ${start} ${len}`);
    else if (what === 7) cmds.push(`discard ${start} ${len}`);
    else if (compressible) {
      const at = Math.floor(start / grain) * grain;
      cmds.push(`write -c -P 0x${rng.below(256).toString(16)} ${at} ${Math.min(grain, length - at)}`);
    } else cmds.push(`write -P 0x${rng.below(256).toString(16)} ${start} ${len}`);
  }
  if (cmds.length > 0) s.run('qemu-io', [...ioTarget(file, driver, encrypted), ...cmds.flatMap((c) => ['-c', c])]);
}

function virtualSize(s: Steps, file: string, driver: string, encrypted: boolean, fallback: number): number {
  const args = encrypted ? ['info', '--output=json', '-U', ...ioTarget(file, driver, true)] : ['info', '--output=json', '-U', '-f', driver, file];
  const r = spawnSync(oracle(s.version), args, { cwd: s.dir, encoding: 'utf8' });
  return r.status === 0 ? (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size'] : fallback;
}

/** A raw-looking file: sectors of a pattern, with an MBR, a GPT or ISO 9660 descriptors in front. */
function rawLooking(rng: Rng, dir: string, kind: 'mbr' | 'gpt' | 'iso' | 'plain', recipe: string[]): number {
  const bytes = kind === 'iso' ? 64 * KiB + 2048 * rng.below(64) : size(rng);
  const head = Buffer.alloc(Math.min(bytes, 40 * KiB), rng.chance(0.5) ? 0 : 0x5a);
  if ((kind === 'mbr' || kind === 'gpt') && head.length >= 512) {
    head.fill(0, 0, Math.min(1024, head.length));
    head[510] = 0x55;
    head[511] = 0xaa;
    // One partition: status, type (0xee: GPT protective), first LBA, sectors.
    const e = 446;
    head[e] = rng.chance(0.5) ? 0x80 : 0;
    head[e + 4] = kind === 'gpt' ? 0xee : rng.pick([0x83, 0x07, 0x0c]);
    head.writeUInt32LE(1, e + 8);
    head.writeUInt32LE(Math.max(1, Math.floor(bytes / 512) - 1), e + 12);
    if (kind === 'gpt' && head.length >= 1024) head.write('EFI PART', 512, 'latin1');
  } else if (kind === 'iso' && head.length >= 0x8800) {
    // A primary volume descriptor at sector 16, then the set terminator.
    head.fill(0, 0x8000, 0x9000 <= head.length ? 0x9000 : head.length);
    head[0x8000] = 1;
    head.write('CD001', 0x8001, 'latin1');
    head[0x8006] = 1;
    if (head.length >= 0x8806) {
      head[0x8800] = 0xff;
      head.write('CD001', 0x8801, 'latin1');
    }
  }
  const fd = openSync(join(dir, 'top.img'), 'w');
  writeSync(fd, head, 0, head.length, 0);
  ftruncateSync(fd, bytes);
  closeSync(fd);
  recipe.push(`# node: top.img, ${bytes} bytes, ${kind} (head ${head.length} bytes of ${head[2048] ?? 0})`);
  return bytes;
}

/** A sector run of mostly one byte with a few random ones (compressible, not constant). */
function someBytes(rng: Rng, n: number): Buffer {
  const b = Buffer.alloc(n, rng.below(256));
  for (let i = rng.below(8); i > 0; i--) b[rng.below(n)] = rng.below(256);
  return b;
}

/** The read-only formats qemu-img cannot create, byte by byte with the test builders (test/formats). */
function handMade(rng: Rng, dir: string, kind: 'bochs' | 'cloop' | 'dmg', recipe: string[]): { file: string; size: number } {
  let bytes: Buffer;
  let size: number;
  if (kind === 'bochs') {
    const extentSize = rng.pick([4096, 32768, 65536]);
    size = 512 * (1 + rng.below(4 * 2048));
    const n = Math.ceil(size / extentSize);
    const catalog: (number | undefined)[] = [];
    const extents: { bits: number[]; fill: (s: number) => number }[] = [];
    for (let i = 0; i < n; i++) {
      if (!rng.chance(0.4)) {
        catalog.push(undefined);
        continue;
      }
      const bits = [...new Set(Array.from({ length: 1 + rng.below(extentSize / 512) }, () => rng.below(extentSize / 512)))];
      const seed = rng.below(256);
      catalog.push(extents.length);
      extents.push({ bits, fill: (s) => (seed + s) & 0xff });
    }
    bytes = buildBochs({ diskSize: size, extentSize, catalog, extents });
  } else if (kind === 'cloop') {
    const blockSize = 512 * rng.pick([1, 8, 128]);
    const n = 1 + rng.below(40);
    bytes = buildCloop(blockSize, Array.from({ length: n }, () => someBytes(rng, blockSize)));
    size = blockSize * n;
  } else {
    // Chunks of each kind, one after another, ended by UDLE.
    const entries: ChunkEntry[] = [];
    const fork: Buffer[] = [];
    let forkLength = 0;
    let sector = 0;
    for (let i = 1 + rng.below(10); i > 0; i--) {
      const count = 1 + rng.below(64);
      const type = rng.pick([UDRW, UDZO, UDZO, UDIG, UDZE]);
      const data = type === UDRW ? someBytes(rng, count * 512) : type === UDZO ? deflateSync(someBytes(rng, count * 512)) : Buffer.alloc(0);
      entries.push({ type, sector, sectorCount: count, offset: forkLength, length: data.length });
      fork.push(data);
      forkLength += data.length;
      sector += count;
    }
    entries.push({ type: UDLE, sector, sectorCount: 0, offset: 0, length: 0 });
    bytes = buildDmg(Buffer.concat(fork), [mishBlock(0, entries)], sector);
    size = sector * 512;
  }
  const file = `top.${kind}`;
  writeFileSync(join(dir, file), bytes);
  recipe.push(`# node: ${file}, ${bytes.length} bytes, ${kind} of ${size} bytes (test/formats/${kind}/build.ts)`);
  return { file, size };
}

export function buildOther(rng: Rng, dir: string, kind: OtherFormat = rng.pick(OTHER_FORMATS)): OtherImage {
  const version: OracleVersion = rng.chance(0.5) ? '10.0' : '7.2';
  const s = new Steps(dir, version);
  s.recipe.push(`# ${kind} built by qemu ${version}`);
  if (kind === 'mbr' || kind === 'gpt' || kind === 'iso' || kind === 'plain') {
    const n = rawLooking(rng, dir, kind, s.recipe);
    return { file: 'top.img', driver: 'raw', kind, size: n, encrypted: false, backing: [], recipe: s.recipe, builder: version };
  }
  if (kind === 'bochs' || kind === 'cloop' || kind === 'dmg') {
    const made = handMade(rng, dir, kind, s.recipe);
    return { file: made.file, driver: kind, kind, size: made.size, encrypted: false, backing: [], recipe: s.recipe, builder: version };
  }
  const backing: { file: string; driver: string }[] = [];
  const o: string[] = [];
  let driver: string = kind;
  let encrypted = false;
  let grain = 64 * KiB;
  let compressible = false;
  const ext = kind === 'qcow2-luks' || kind === 'qcow2-aes' ? 'qcow2' : kind === 'qcow-aes' ? 'qcow' : kind;
  let bytes = size(rng);
  const create = ['create', '-q'];
  if (kind === 'vdi') {
    if (rng.chance(0.35)) o.push('static=on');
    grain = MiB;
  } else if (kind === 'qed') {
    grain = rng.pick([4, 16, 64, 64, 256, 1024]) * KiB;
    if (grain !== 64 * KiB || rng.chance(0.2)) o.push(`cluster_size=${grain}`);
    if (rng.chance(0.3)) o.push(`table_size=${rng.pick([1, 2, 4, 8, 16])}`);
  } else if (kind === 'parallels') {
    if (rng.chance(0.4)) o.push(`cluster_size=${rng.pick(['512k', '1M', '2M', '64k', '4k'])}`);
    grain = MiB;
  } else if (kind === 'qcow') {
    grain = 4 * KiB;
    compressible = true;
  } else if (kind === 'luks') {
    encrypted = true;
    o.push('key-secret=sec0', `iter-time=${rng.pick([1, 5, 10])}`);
    if (rng.chance(0.3)) o.push(`cipher-alg=${rng.pick(['aes-128', 'aes-192', 'aes-256', 'twofish-128', 'twofish-256', 'serpent-256', 'cast5-128'])}`);
    if (rng.chance(0.3)) o.push(`cipher-mode=${rng.pick(['xts', 'cbc', 'ecb', 'ctr'])}`);
    if (rng.chance(0.3)) o.push(`ivgen-alg=${rng.pick(['plain', 'plain64', 'essiv'])}`);
    if (rng.chance(0.2)) o.push(`ivgen-hash-alg=${rng.pick(['sha1', 'sha256', 'sha512'])}`);
    if (rng.chance(0.2)) o.push(`hash-alg=${rng.pick(['sha1', 'sha256', 'sha512', 'ripemd160'])}`);
    create.push('--object', SECRET_OBJECT);
  } else if (kind === 'qcow-aes' || kind === 'qcow2-aes') {
    // Legacy AES-CBC: qemu-img still makes and reads them (system emulators refuse them).
    driver = kind === 'qcow-aes' ? 'qcow' : 'qcow2';
    encrypted = true;
    grain = driver === 'qcow' ? 4 * KiB : 64 * KiB;
    o.push('encrypt.format=aes', 'encrypt.key-secret=sec0');
    if (driver === 'qcow2' && rng.chance(0.3)) o.push('compat=0.10');
    create.push('--object', SECRET_OBJECT);
  } else {
    driver = 'qcow2';
    encrypted = true;
    o.push('encrypt.format=luks', 'encrypt.key-secret=sec0', `encrypt.iter-time=${rng.pick([1, 5, 10])}`);
    if (rng.chance(0.3)) o.push(`encrypt.cipher-alg=${rng.pick(['aes-128', 'aes-256', 'twofish-256', 'serpent-128'])}`);
    if (rng.chance(0.2)) o.push(`encrypt.cipher-mode=${rng.pick(['xts', 'cbc'])}`, `encrypt.ivgen-alg=${rng.pick(['plain64', 'essiv'])}`, 'encrypt.ivgen-hash-alg=sha256');
    if (rng.chance(0.4)) o.push(`cluster_size=${rng.pick([4096, 16384, 65536, 2 * MiB])}`);
    create.push('--object', SECRET_OBJECT);
  }
  // A backing chain under qed and qcow tops (and qcow2-luks): a raw, qcow2 or qed base.
  const chained = ['qed', 'qcow', 'qcow2-luks', 'qcow-aes'].includes(kind) && rng.chance(0.4);
  if (chained) {
    const bdriver = rng.pick(['raw', 'qcow2', 'qed']);
    const bfile = `base.${bdriver}`;
    const bsize = rng.chance(0.5) ? bytes : size(rng);
    if (!s.run('qemu-img', ['create', '-q', '-f', bdriver, bfile, String(bsize)])) throw new Error(s.recipe.join('\n'));
    writes(rng, s, bfile, bdriver, false, virtualSize(s, bfile, bdriver, false, bsize), 64 * KiB, bdriver === 'qcow2');
    backing.push({ file: bfile, driver: bdriver });
    create.push('-b', bfile, '-F', bdriver);
    if (rng.chance(0.4)) bytes = 0;
  }
  const file = `top.${ext}`;
  const argsWith = (opts: string[]) => [...create, '-f', driver, ...(opts.length > 0 ? ['-o', opts.join(',')] : []), file, ...(bytes > 0 ? [String(bytes)] : [])];
  // An option combination qemu refuses (a cipher with no such mode, say): the needed options only.
  if (!s.run('qemu-img', argsWith(o)) && !s.run('qemu-img', argsWith(o.filter((x) => /secret|iter-time|encrypt.format/.test(x))))) throw new Error(s.recipe.join('\n'));
  const length = virtualSize(s, file, driver, encrypted, bytes);
  for (let round = rng.below(3); round >= 0; round--) writes(rng, s, file, driver, encrypted, length, grain, compressible);
  return { file, driver, kind, size: length, encrypted, backing, recipe: s.recipe, builder: version };
}
