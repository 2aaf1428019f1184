// How the generative hunt compares what two tools wrote: byte for byte after masking what qemu
// draws at random (a VMDK's CID, a VHD footer's timestamp and UUID, a VHDX's headers and log
// GUIDs, a VDI's UUIDs), or, where the bytes themselves may differ (deflate output, LUKS key
// material), by content: `qemu-img compare` of the two files and `qemu-img check` of ours.
import { readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { maskCid, maskVhd } from '../../writers/vpc-vmdk-harness.ts';
import { maskVhdx } from '../../writers/vhdx-harness.ts';
import { runQemu } from './area.ts';
import { BIG_FILE, firstBigDifference } from './big-files.ts';

/** Files that compare with no mask: any file of these formats, a VMDK's flat extents. */
const UNMASKED = new Set(['raw', 'qcow2', 'qed', 'qcow', 'parallels', 'luks']);
const unmasked = (format: string, name: string) => UNMASKED.has(format) || (format === 'vmdk' && /-(flat|f\d+)\.vmdk$/.test(name));

export type FileCompare = 'bytes' | 'content';

/** The target format's mask (identity for formats qemu writes deterministically). */
function maskFor(format: string, name: string): (file: Buffer, label: string) => Buffer {
  if (format === 'vpc') return (f, label) => (f.toString('latin1', f.length - 512, f.length - 504) === 'conectix' ? maskVhd(f, label) : f);
  if (format === 'vmdk') return (f) => maskCid(f, name.replace(/\.[^.]*$/, ''));
  if (format === 'vhdx' && /\.vhdx$/.test(name)) return (f, label) => (f.length > 256 * 1024 ? logPadding(f, maskVhdx(f, label)) : f);
  if (format === 'vdi' && /\.vdi$/.test(name)) return (f) => {
    const out = Buffer.from(f);
    if (out.length >= 0x1a8) out.fill(0, 0x188, 0x1a8);
    return out;
  };
  return (f) => f;
}

/**
 * A VHDX log entry's descriptor sector past its descriptors: qemu 10.0 leaves whatever its buffer
 * held there (uninitialised memory: bytes of the data it copied before), 7.2 and instar zeros.
 */
function logPadding(file: Buffer, masked: Buffer): Buffer {
  const logOffset = Number(file.readBigUInt64LE(64 * 1024 + 72));
  const logLength = file.readUInt32LE(64 * 1024 + 68);
  for (let p = logOffset; p < logOffset + logLength && p + 4096 <= file.length; p += 4096) {
    if (file.toString('latin1', p, p + 4) !== 'loge') continue;
    const descriptors = file.readUInt32LE(p + 24);
    const used = 64 + 32 * descriptors;
    if (used < 4096) masked.fill(0, p + used, p + 4096);
  }
  return masked;
}

export function filesIn(dir: string): string[] {
  return readdirSync(dir).sort();
}

export function compareNames(mine: string, theirs: string): string[] {
  const a = filesIn(mine);
  const b = filesIn(theirs);
  return a.join('|') === b.join('|') ? [] : [`files: instar [${a.join(', ')}], qemu [${b.join(', ')}]`];
}

/** The first differing offset of two buffers, or -1. */
function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Problems (empty when equal) between the files two runs left in `mine` and `theirs`. */
export function compareBytes(mine: string, theirs: string, format: string): string[] {
  const a = filesIn(mine);
  const b = filesIn(theirs);
  if (a.join('|') !== b.join('|')) return [`files: instar [${a.join(', ')}], qemu [${b.join(', ')}]`];
  const problems: string[] = [];
  for (const name of a) {
    if (Math.max(statSync(join(mine, name)).size, statSync(join(theirs, name)).size) > BIG_FILE) {
      // Past Node's 2 GiB read limit: by data runs, and only where no mask is needed.
      const at = unmasked(format, name) ? firstBigDifference(join(mine, name), join(theirs, name)) : -1;
      if (!unmasked(format, name)) problems.push(`${name}: too big to mask (${format})`);
      else if (at >= 0) problems.push(`${name}: differs at byte ${at} (0x${at.toString(16)})`);
      continue;
    }
    const mask = maskFor(format, name);
    let x: Buffer;
    let y: Buffer;
    try {
      x = mask(readFileSync(join(mine, name)), `instar ${name}`);
      y = mask(readFileSync(join(theirs, name)), `qemu ${name}`);
    } catch (e) {
      problems.push(`${name}: cannot mask: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    const at = firstDiff(x, y);
    if (at >= 0) problems.push(`${name}: differs at byte ${at} (0x${at.toString(16)}; lengths ${x.length}, ${y.length})`);
  }
  return problems;
}

/** A qemu-img file argument for an image (LUKS needs its secret through --image-opts). */
export function imageArgs(path: string, format: string, secret?: string): string[] {
  if (format === 'luks' && secret) return ['--object', `secret,id=hsec,data=${secret}`, '--image-opts', `driver=luks,key-secret=hsec,file.filename=${path}`];
  return ['-f', format, path];
}

/** Content comparison: qemu 10.0's compare of the two targets and check of both (the same result). */
export async function compareContent(mine: string, theirs: string, format: string, secret?: string, target?: string): Promise<string[]> {
  const problems: string[] = [];
  const a = filesIn(mine);
  const b = filesIn(theirs);
  if (a.join('|') !== b.join('|')) return [`files: instar [${a.join(', ')}], qemu [${b.join(', ')}]`];
  // The image itself (not its data file or extents).
  const main = target !== undefined && a.includes(target) ? target : a.find((n) => n.startsWith('out.'));
  if (!main) return problems;
  const x = join(mine, main);
  const y = join(theirs, main);
  if (format === 'luks') {
    // compare takes one --image-opts for both: decrypt each to raw beside the runs and compare those.
    const raws: Buffer[] = [];
    for (const p of [x, y]) {
      const r = await runQemu('10.0', ['convert', ...imageArgs(p, format, secret), '-O', 'raw', `${p}.plain`], mine);
      if (r.status !== 0) return [`decrypting ${p}: ${r.stderr.trim()}`];
      raws.push(readFileSync(`${p}.plain`));
      rmSync(`${p}.plain`);
    }
    const at = firstDiff(raws[0], raws[1]);
    return at < 0 ? [] : [`decrypted content differs at ${at}`];
  }
  const c = await runQemu('10.0', ['compare', '-f', format, '-F', format, x, y], mine);
  if (c.status !== 0) problems.push(`compare: ${c.status} ${c.stdout.trim()} ${c.stderr.trim()}`);
  for (const [who, p] of [['instar', x], ['qemu', y]]) {
    const k = await runQemu('10.0', ['check', '-f', format, p], mine);
    if (k.status !== 0 && !/does not support checks/.test(k.stderr)) problems.push(`check of ${who}'s: ${k.status} ${k.stdout.trim()} ${k.stderr.trim()}`);
  }
  return problems;
}
