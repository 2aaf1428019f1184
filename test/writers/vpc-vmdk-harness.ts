// In-process harness for the VHD and VMDK writers: create's layout into fresh files, then the
// driver's writer fed with the guest data of a raw file in ascending order, skipping what reads
// as zeros, as qemu-img convert feeds qemu's driver. Also the oracle side (qemu-img convert with
// the same options) and the comparisons the writer tests share.
import { closeSync, ftruncateSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { findDriver } from '../../src/formats/registry.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { allocateFirstBlock } from '../../src/ops/convert/first-block.ts';
import type { CreateFileLayout, CreatePlan, ImageWriter } from '../../src/formats/types.ts';
import { runQemu, type OracleVersion } from '../helpers/oracles.ts';

/** "a=b,c=d" as create's option map. */
export function optionMap(options: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const kv of options.split(',').filter((s) => s !== '')) {
    const [k, v] = kv.split('=');
    map.set(k, v);
  }
  return map;
}

/** The file as the host creates it: grown from empty (qemu then zeroes its first block, as the
 *  convert pipeline's allocateFirstBlock does), then create's writes. */
function writeLayout(path: string, layout: CreateFileLayout): number {
  const fd = openSync(path, 'w+');
  ftruncateSync(fd, layout.length);
  allocateFirstBlock(layout.length, (buf, pos) => writeSync(fd, buf, 0, buf.length, pos));
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

/** Creates `out` (an absolute path) as `format` with `options`, sized and filled from the raw file `src`. */
export function writeWithInstar(format: string, options: string, src: string, out: string, chunk?: number): CreatePlan {
  const size = statSync(src).size;
  const { writer, plan, fds } = openWriterOn(format, options, src, out);
  try {
    const unit = chunk ?? writer.clusterSize;
    const srcFd = openSync(src, 'r');
    try {
      const buf = Buffer.alloc(unit);
      const zeros = Buffer.alloc(unit);
      for (let pos = 0; pos < size; pos += unit) {
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

/** Runs a qemu-img command on both files; its outputs with each file's name replaced must be equal. */
export function sameOutput(version: OracleVersion, args: (file: string) => string[], mine: string, theirs: string, label: string): string[] {
  const run = (f: string) => {
    const r = runQemu(version, args(f));
    return `${r.status}\n${r.stdout.split(f).join('FILE')}\n${r.stderr.split(f).join('FILE')}`;
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
