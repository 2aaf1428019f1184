// Invariants of the only writer, `convert -O raw` (src/ops/convert.ts), checked in-process on
// fuzz mutants: the guest op runs as the host would run it (one or several 'copy' guests on
// disjoint ranges of the disk) into a recording output device, and
//  - the output reads back as the source reads through its driver (same hash);
//  - no write reaches past the output's virtual size or outside its guest's range;
//  - no two writes overlap (also across the guests of one conversion);
//  - when the target already reads as zeros and -S > 0, no S-aligned block of S zero bytes is
//    written (qemu's sparse detection); otherwise every byte is written exactly once;
//  - only ImageError escapes, and a source that cannot be read fails the conversion too.
// A share of the conversions write into a real file through its fd instead (the writer's
// asynchronous path, where a write landing late or past the end would show in the file).
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FdDevice, MemoryDevice } from '../../src/io/fd-device.ts';
import { ImageError, type BlockDevice, type Image } from '../../src/formats/types.ts';
import { convertOp, type ConvertOpenResult, type ConvertOptions } from '../../src/ops/convert.ts';
import { openTree } from '../../src/ops/open-tree.ts';
import type { OpContext } from '../../src/ops/types.ts';
import type { Rng } from './prng.ts';

/** Larger disks are skipped (the reference read and the output live in memory). */
export const MAX_DISK = 16 * 1024 * 1024;

/** An output device that keeps its bytes and every write, and flags writes out of bounds. */
export class RecordingDevice implements BlockDevice {
  readonly bytes: Buffer;
  readonly writes: { at: number; length: number; zero: boolean; buf: Buffer }[] = [];
  range: [number, number];
  readonly violations: string[] = [];

  constructor(readonly size: number, fill: number) {
    this.bytes = Buffer.alloc(size, fill);
    this.range = [0, size];
  }

  read(buf: Uint8Array, pos: number): number {
    if (pos >= this.size) return 0;
    const n = Math.min(buf.length, this.size - pos);
    buf.set(this.bytes.subarray(pos, pos + n));
    return n;
  }

  write(buf: Uint8Array, pos: number): void {
    const end = pos + buf.length;
    if (!Number.isSafeInteger(pos) || pos < 0 || end > this.size) this.violations.push(`write [${pos}, ${end}) past the output's size ${this.size}`);
    else if (pos < this.range[0] || end > this.range[1]) this.violations.push(`write [${pos}, ${end}) outside its guest's range [${this.range[0]}, ${this.range[1]})`);
    else this.bytes.set(buf, pos);
    const copy = Buffer.from(buf);
    this.writes.push({ at: pos, length: buf.length, zero: isZero(copy), buf: copy });
  }
}

function context(devices: BlockDevice[]): OpContext {
  return {
    devices: devices.map((dev, fd) => ({ spec: { fd, role: fd === devices.length - 1 ? 'output' : 'input', writable: fd === devices.length - 1 }, dev })),
    emit: () => {},
  };
}

const ZEROS = Buffer.alloc(1024 * 1024);
function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - at);
    if (b.compare(ZEROS, 0, n, at, at + n) !== 0) return false;
  }
  return true;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex').slice(0, 16);

/** The guest-visible bytes of each source read through its driver, concatenated; undefined when a read fails. */
function reference(images: Image[]): Buffer | undefined {
  const out = Buffer.alloc(images.reduce((n, i) => n + i.virtualSize, 0));
  let base = 0;
  try {
    for (const image of images) {
      for (let at = 0; at < image.virtualSize; at += 1024 * 1024) image.read(out.subarray(base + at, base + Math.min(image.virtualSize, at + 1024 * 1024)), at);
      base += image.virtualSize;
    }
  } catch (e) {
    if (e instanceof ImageError) return undefined;
    throw e;
  }
  return out;
}

export interface WriterCase {
  /** The sources (mutants); each one's format, undefined = detection. */
  sources: { bytes: Buffer; format?: string }[];
  sparseSize: number;
  targetIsZero: boolean;
  /** How many guests split the disk. */
  guests: number;
  /** Write into a real file through its fd (the writer's asynchronous path) instead of the
   *  recording device: only content, size and failure are checked then. */
  onFile?: boolean;
}

export function pickWriterCase(sources: { bytes: Buffer; format?: string }[], rng: Rng): WriterCase {
  return {
    sources,
    sparseSize: rng.pick([0, 512, 4096, 4096, 65536, 1024 * 1024, 3 * 512]),
    targetIsZero: rng.chance(0.8),
    guests: rng.pick([1, 1, 2, 3]),
    onFile: rng.chance(0.2),
  };
}

export type WriterOutcome = { skipped: string } | { failure: string } | { ok: true; writes: number; failed: boolean };

/** Runs one conversion and checks the invariants; a broken one comes back as `failure`. */
export async function checkWriter(c: WriterCase, rng: Rng): Promise<WriterOutcome> {
  try {
    return await run(c, rng);
  } catch (e) {
    const err = e as Error;
    return { failure: `${err?.name ?? typeof e} escaped: ${err?.message ?? String(e)}` };
  }
}

async function run(c: WriterCase, rng: Rng): Promise<WriterOutcome> {
  const inputs = c.sources.map((s) => new MemoryDevice(s.bytes));
  const sources = c.sources.map((s, index) => ({ index, format: s.format, fileName: `src${index}` }));
  const base: ConvertOptions = { phase: 'open', sources, unsafeQuirks: true, sparseSize: c.sparseSize, targetIsZero: c.targetIsZero };
  let opened: ConvertOpenResult;
  try {
    opened = convertOp({ ...base } as unknown as Record<string, unknown>, context(inputs)) as ConvertOpenResult;
  } catch (e) {
    if (e instanceof ImageError) return { skipped: 'open refused' };
    throw e;
  }
  if (!('sizes' in opened)) return { skipped: 'open failed' };
  // Sizes past 2^53 come as decimal strings (WireSize); Number() rounds them, and MAX_DISK skips them.
  const total = opened.sizes.map(Number).reduce((n, s) => n + s, 0);
  if (total > MAX_DISK) return { skipped: 'too large' };
  const expected = reference(sources.map((s) => openTree(context(inputs), s.index, { format: s.format, unsafeQuirks: true, secrets: {} })));

  // The host's split: `guests` disjoint ranges covering the disk, each copied by its own guest.
  const cuts = [0, ...Array.from({ length: c.guests - 1 }, () => Math.floor((rng.below(total + 1)) / 512) * 512), total].sort((a, b) => a - b);
  if (c.onFile) return onFile(c, base, inputs, cuts, total, expected);
  const out = new RecordingDevice(total, c.targetIsZero ? 0 : 0xa5);
  let failed = false;
  for (let g = 0; g + 1 < cuts.length; g++) {
    const range: [number, number] = [cuts[g], cuts[g + 1]];
    if (range[0] === range[1]) continue;
    out.range = range;
    try {
      await convertOp({ ...base, phase: 'copy', range } as unknown as Record<string, unknown>, context([...inputs, out]));
    } catch (e) {
      if (!(e instanceof ImageError)) throw e;
      failed = true;
    }
  }
  const problems = [...out.violations];
  // Writes never overlap one another.
  const sorted = [...out.writes].sort((a, b) => a.at - b.at);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (sorted[i].at < prev.at + prev.length) problems.push(`writes overlap: [${prev.at}, ${prev.at + prev.length}) and [${sorted[i].at}, ${sorted[i].at + sorted[i].length})`);
  }
  if (expected === undefined) {
    // The source cannot be read through its driver: the conversion must fail too.
    if (!failed) problems.push('the source fails to read, but the conversion succeeded');
  } else if (failed) {
    problems.push('the source reads fine, but the conversion failed');
  } else {
    if (sha(out.bytes) !== sha(expected)) problems.push(`output ${sha(out.bytes)} != source read through its driver ${sha(expected)} (first difference at byte ${firstDifference(out.bytes, expected)})`);
    const sparse = c.targetIsZero && c.sparseSize > 0;
    if (sparse) problems.push(...zeroBlocksWritten(sorted, c.sparseSize));
    else {
      const covered = sorted.reduce((n, w) => n + w.length, 0);
      if (covered !== total) problems.push(`-S ${c.sparseSize}, target not zero: ${covered} of ${total} bytes written`);
    }
  }
  if (problems.length > 0) return { failure: problems.slice(0, 3).join('; ') };
  return { ok: true, writes: out.writes.length, failed };
}

/** The conversion into a real (sparse, pre-sized) file, as the host creates it; writes are async. */
async function onFile(c: WriterCase, base: ConvertOptions, inputs: BlockDevice[], cuts: number[], total: number, expected: Buffer | undefined): Promise<WriterOutcome> {
  const dir = mkdtempSync(join(tmpdir(), 'instar-writer-'));
  const path = join(dir, 'out.raw');
  const fd = openSync(path, 'w+');
  let failed = false;
  try {
    ftruncateSync(fd, total);
    if (!c.targetIsZero) writeSync(fd, Buffer.alloc(total, 0xa5), 0, total, 0);
    for (let g = 0; g + 1 < cuts.length; g++) {
      const range: [number, number] = [cuts[g], cuts[g + 1]];
      if (range[0] === range[1]) continue;
      try {
        await convertOp({ ...base, phase: 'copy', range } as unknown as Record<string, unknown>, context([...inputs, new FdDevice(fd, true)]));
      } catch (e) {
        if (!(e instanceof ImageError)) throw e;
        failed = true;
      }
    }
    const size = fstatSync(fd).size;
    const problems: string[] = [];
    if (size !== total) problems.push(`the output file grew to ${size} bytes (virtual size ${total})`);
    if (expected === undefined && !failed) problems.push('the source fails to read, but the conversion succeeded');
    else if (expected !== undefined && failed) problems.push('the source reads fine, but the conversion failed');
    else if (expected !== undefined) {
      const written = readFileSync(path).subarray(0, total);
      if (sha(written) !== sha(expected)) problems.push(`file output ${sha(written)} != source read through its driver ${sha(expected)} (first difference at byte ${firstDifference(written, expected)})`);
    }
    return problems.length > 0 ? { failure: problems.join('; ') } : { ok: true, writes: 0, failed };
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
}

function firstDifference(a: Buffer, b: Buffer): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** qemu's -S: a block of S zero bytes, aligned to S in the output, is never written. */
function zeroBlocksWritten(writes: RecordingDevice['writes'], sparse: number): string[] {
  const problems: string[] = [];
  for (const w of writes) {
    if (w.zero) {
      problems.push(`-S ${sparse}: an all-zero write [${w.at}, ${w.at + w.length})`);
      continue;
    }
    for (let block = Math.ceil(w.at / sparse) * sparse; block + sparse <= w.at + w.length; block += sparse) {
      const piece = w.buf.subarray(block - w.at, block - w.at + sparse);
      if (isZero(piece)) problems.push(`-S ${sparse}: zero block [${block}, ${block + sparse}) written`);
    }
  }
  return problems;
}
