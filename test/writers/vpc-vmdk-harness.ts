// In-process harness for the VHD and VMDK writers: create's layout into fresh files, then the
// driver's writer fed with the guest data of a raw file in ascending order, skipping what reads
// as zeros, as qemu-img convert feeds qemu's driver. Also the oracle side (qemu-img convert with
// the same options) and the comparisons the writer tests share.
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { findDriver } from '../../src/formats/registry.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { fileDataRuns } from '../../src/host/data-runs.ts';
import type { CreateFileLayout, CreatePlan, ImageWriter } from '../../src/formats/types.ts';
import { join } from 'node:path';
import { runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';

/** "a=b,c=d" as create's option map. */
export function optionMap(options: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const kv of options.split(',').filter((s) => s !== '')) {
    const [k, v] = kv.split('=');
    map.set(k, v);
  }
  return map;
}

/** The file as the guest's create step lays it out: its length, then create's writes. */
function writeLayout(path: string, layout: CreateFileLayout): number {
  const fd = openSync(path, 'w+');
  ftruncateSync(fd, layout.length);
  for (const w of layout.writes) writeSync(fd, w.bytes, 0, w.bytes.length, w.pos);
  return fd;
}

/** Creates `out` (an absolute path) as `format` sized as the raw file `src`, and opens the writer; the caller closes `fds`. */
export function openWriterOn(format: string, options: string, src: string, out: string): { writer: ImageWriter; plan: CreatePlan; fds: number[] } {
  const driver = findDriver(format)!;
  const size = statSync(src).size;
  const plan = driver.create!.plan(optionMap(options), BigInt(size), { now: Math.floor(Date.now() / 1000), filename: out, randomBytes: (n) => randomBytes(n) });
  const layout = driver.create!.layout(plan);
  const fds = [writeLayout(out, layout.image)];
  (layout.extents ?? []).forEach((l, i) => fds.push(writeLayout(plan.extentFiles![i], l)));
  const [image, ...extents] = fds.map((fd) => new FdDevice(fd, true));
  return { writer: driver.writer!.open({ image, extents }, plan), plan, fds };
}

/**
 * Creates `out` (an absolute path) as `format` with `options`, sized and filled from the raw file
 * `src` in units of `chunk` (the writer's cluster size by default). `dataRanges`: where `src` may
 * hold data (the rest is known to be holes, which a test need not read through).
 */
export function writeWithInstar(format: string, options: string, src: string, out: string, chunk?: number, dataRanges?: [number, number][]): CreatePlan {
  const size = statSync(src).size;
  const { writer, plan, fds } = openWriterOn(format, options, src, out);
  try {
    const unit = chunk ?? writer.clusterSize;
    const srcFd = openSync(src, 'r');
    const wanted = (pos: number) => !dataRanges || dataRanges.some(([s, e]) => pos < e && pos + unit > s);
    try {
      const buf = Buffer.alloc(unit);
      const zeros = Buffer.alloc(unit);
      for (let pos = 0; pos < size; pos += unit) {
        if (!wanted(pos)) continue;
        const piece = buf.subarray(0, Math.min(unit, size - pos));
        readSync(srcFd, piece, 0, piece.length, pos);
        if (!piece.equals(zeros.subarray(0, piece.length))) writer.write(piece, pos);
      }
    } finally {
      closeSync(srcFd);
    }
    writer.finish();
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  return plan;
}

/** qemu-img convert -O <format> -o <options> from `src` (any format qemu detects) into `out`. */
export function writeWithQemu(version: OracleVersion, format: string, options: string, src: string, out: string, extra: string[] = []): void {
  const r = runQemu(version, ['convert', ...extra, '-O', format, ...(options ? ['-o', options] : []), src, out]);
  if (r.status !== 0) throw new Error(`qemu-img ${version} convert -O ${format} ${options}: ${r.stderr}`);
}

/**
 * Runs a qemu-img command on both files; its outputs must be equal once each file's name without
 * its extension (which extent files share) is replaced and `normalize` has run.
 */
export function sameOutput(version: OracleVersion, args: (file: string) => string[], mine: string, theirs: string, label: string, normalize = (t: string) => t): string[] {
  const run = (f: string) => {
    const r = runQemu(version, args(f));
    const stem = f.replace(/\.[^./]*$/, '');
    return normalize(`${r.status}\n${r.stdout.split(stem).join('FILE')}\n${r.stderr.split(stem).join('FILE')}`);
  };
  const [a, b] = [run(mine), run(theirs)];
  return a === b ? [] : [`${label}: qemu-img ${version} ${args('FILE').join(' ')}:\ninstar: ${a}\nqemu:   ${b}`];
}

/** The first differing byte of two buffers (after masking), or a length difference, as a message. */
export function firstDifference(a: Buffer, b: Buffer, label: string): string[] {
  if (a.length !== b.length) return [`${label}: instar's file is ${a.length} bytes, qemu's ${b.length}`];
  const at = a.findIndex((x, i) => x !== b[i]);
  return at < 0 ? [] : [`${label}: first difference at byte ${at} (0x${at.toString(16)}): instar ${a[at]}, qemu ${b[at]}`];
}

export const read = (path: string): Buffer => readFileSync(path);

/** Bytes of the file the file system allocated (du's figure, which info prints as disk size). */
export const allocated = (path: string): number => statSync(path).blocks * 512;

/**
 * Where the file has data (SEEK_DATA/SEEK_HOLE runs, through the host's lseek), as text: the
 * layout of holes, which st_blocks also counts but blurs with the file system's own blocks (an
 * ext4 file in more than 4 extents takes an index block: qemu's synced small writes fragment
 * files that instar writes in one piece, 4 KiB more in `du` and info's disk size for the same
 * holes). Without lseek the allocated byte count stands in.
 */
export function dataMap(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const st = statSync(path);
    const runs = fileDataRuns(fd, 1_000_000);
    if (runs) return JSON.stringify(runs);
    if (st.blocks === 0) return '[]';
    return st.blocks * 512 >= Math.ceil(st.size / 4096) * 4096 ? JSON.stringify([[0, st.size]]) : `${st.blocks * 512} bytes allocated`;
  } finally {
    closeSync(fd);
  }
}

/** info's figures of allocation (disk size) masked: dataMap compares the layout behind them. */
export const maskActualSize = (text: string): string => text.replace(/"actual-size": \d+/g, '"actual-size": 0');

export const MiB = 1024 * 1024;

/** A sparse raw file of `size` bytes with `writes` ([offset, bytes]) in it. */
export function rawFile(path: string, size: number, writes: [number, Buffer][]): string {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, size);
  for (const [pos, bytes] of writes) writeSync(fd, bytes, 0, bytes.length, pos);
  closeSync(fd);
  return path;
}

/** `length` seeded pseudo-random bytes. */
export function noise(seed: number, length: number): Buffer {
  const next = prng(seed);
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = next() & 0xff;
  return b;
}

/**
 * 9 MiB + 1000 bytes: data at the start, inside the second 2 MiB block, across a block boundary,
 * a 4 KiB hole inside a data run, a short run inside a grain, and a tail in a block and a grain
 * the disk covers only in part.
 */
export function holesFile(path: string): string {
  return rawFile(path, 9 * MiB + 1000, [
    [0, Buffer.from('xxxxxxxxxx')],
    [3 * MiB + 4096, noise(1, 904)],
    [6 * MiB - 10, noise(2, 20)],
    [7 * MiB, noise(3, 8192)],
    [7 * MiB + 12288, noise(4, 20000)],
    [8 * MiB + 70000, Buffer.alloc(300, 0x5a)],
    [9 * MiB + 995, Buffer.from('tail!')],
  ]);
}

/**
 * A qcow2 over a qcow2 backing file (data from both layers, a zeroed cluster over base data, a
 * top larger than its base), and the raw file of its guest data (qemu-img 7.2 converted it).
 * `topData`: the qemu-io write of the top's own data.
 */
export function chainFiles(dir: string, topData = 'write -P 0x33 512k 1M'): [string, string] {
  const at = (name: string) => join(dir, name);
  const img = (...args: string[]) => assertOk(runQemu('7.2', args), args.join(' '));
  const io = (file: string, cmd: string) => assertOk(runQemu('7.2', ['-f', 'qcow2', '-c', cmd, file], {}, 'qemu-io'), cmd);
  img('create', '-q', '-f', 'qcow2', at('base.qcow2'), '6M');
  io(at('base.qcow2'), 'write -P 0x11 0 1M');
  io(at('base.qcow2'), 'write -P 0x22 4M 64k');
  img('create', '-q', '-f', 'qcow2', '-b', at('base.qcow2'), '-F', 'qcow2', at('top.qcow2'), '7M');
  io(at('top.qcow2'), topData);
  io(at('top.qcow2'), 'write -z 4M 64k');
  io(at('top.qcow2'), 'write -P 0x44 6700k 4k');
  img('convert', '-f', 'qcow2', '-O', 'raw', at('top.qcow2'), at('top.raw'));
  return [at('top.qcow2'), at('top.raw')];
}

function assertOk(r: { status: number | null; stderr: string }, what: string): void {
  if (r.status !== 0) throw new Error(`${what}: ${r.stderr}`);
}

/** The footers' timestamp (24), checksum (64) and UUID (68) zeroed, after checking the checksum. */
export function maskVhd(file: Buffer, label: string): Buffer {
  const out = Buffer.from(file);
  for (const base of new Set([0, file.length - 512])) {
    if (base < 0 || out.toString('latin1', base, base + 8) !== 'conectix') continue;
    const footer = Buffer.from(out.subarray(base, base + 512));
    const stored = footer.readUInt32BE(64);
    footer.writeUInt32BE(0, 64);
    let sum = 0;
    for (const b of footer) sum = (sum + b) >>> 0;
    assert.equal(stored, ~sum >>> 0, `${label}: footer checksum at ${base}`);
    out.fill(0, base + 24, base + 28);
    out.fill(0, base + 64, base + 84);
  }
  return out;
}

/** Where the descriptor is: sector 1 of a monolithic sparse file (20 sectors), else the whole file. */
const descriptorArea = (file: Buffer): [number, number] => (file.toString('latin1', 0, 4) === 'KDMV' ? [512, 20 * 512] : [0, file.length]);

/**
 * The file with its descriptor's CID value masked and qemu's leftovers of a longer CID line
 * zeroed; the extent lines name the image's files by its `stem`, which is the same length on
 * both sides and masked too.
 */
export function maskCid(file: Buffer, stem: string): Buffer {
  const [offset, length] = descriptorArea(file);
  const area = file.subarray(offset, offset + length);
  let end = area.indexOf(0);
  if (end < 0) end = area.length;
  const text = Buffer.from(area.toString('latin1', 0, end).replace(/^CID=[0-9a-f]+$/m, 'CID=X').split(stem).join('S'.repeat(stem.length)), 'latin1');
  // A descriptor file that is only its text (never rewritten) is as long as its CID makes it:
  // compare the masked text. Otherwise the area keeps its length, the text's NUL-terminated end
  // moving with the CID's length; past qemu's leftovers everything must still compare.
  let masked = text;
  if (end < area.length) {
    masked = Buffer.alloc(area.length);
    text.copy(masked);
    const tail = area.subarray(Math.min(area.length, end + 8));
    if (tail.some((b) => b !== 0)) tail.copy(masked, area.length - tail.length);
  }
  return Buffer.concat([file.subarray(0, offset), masked, file.subarray(offset + length)]);
}

/** A monolithic sparse file's allocated grains (indices), as its grain directory and the redundant one say. */
export function grains(file: Buffer, label: string): number[] {
  const capacity = Number(file.readBigUInt64LE(12));
  const perTable = file.readUInt32LE(44);
  const tables = Math.ceil(Math.ceil(capacity / 128) / perTable);
  const walk = (directory: number) => {
    const found: number[] = [];
    for (let t = 0; t < tables; t++) {
      const table = file.readUInt32LE(directory * 512 + t * 4);
      for (let i = 0; i < perTable; i++) if (file.readUInt32LE(table * 512 + i * 4) !== 0) found.push(t * perTable + i);
    }
    return found;
  };
  const main = walk(Number(file.readBigUInt64LE(56)));
  assert.deepEqual(walk(Number(file.readBigUInt64LE(48))), main, `${label}: the redundant grain tables differ from the main ones`);
  return main;
}
