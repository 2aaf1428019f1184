// What a guest bundle runs while its V8 startup snapshot is built (start.ts): the commonest ops
// (info, and convert between raw and qcow2) on images in memory. Node keeps in the snapshot the
// bytecode of every function that has run, and of no other: a guest started from it compiles
// only what these ops did not reach (measured: a qcow2 → raw convert guest ~2 ms CPU cheaper,
// perf stat, 60 alternating runs). Only raw and qcow2: every guest deserializes all the warmed
// code, and warming the vpc, vmdk and vhdx readers and writers as well (a blob 440 KB larger,
// not 140 KB) made no guest measurably cheaper, not even a vmdk convert's.
// Nothing may stay behind: no file, descriptor, clock, randomness or environment is touched (the
// plan's clock and random bytes are constants), the images live in memory and are garbage when
// this ends, and what the ops took of Buffer's pool, which is in the snapshot, is zeroed.
// test/sandbox/snapshot-warm-up.test.ts and snapshot-top-level.test.ts check it.
import { ImageError, type CreateEnvironment } from '../formats/types.ts';
import { findDriver } from '../formats/registry.ts';
import type { ConvertOptions } from '../ops/convert.ts';
import type { ConvertImageOptions } from '../ops/convert/to-image.ts';
import type { InfoOptions } from '../ops/info.ts';
import type { Op, OpContext } from '../ops/types.ts';
import type { DeviceSpec } from '../protocol/messages.ts';

/** The disk's data: this text, each byte flipped (so that the text in the bundle is not its bytes). */
export const WARM_UP_TEXT = 'instar guest warm-up data, never in a snapshot. ';
export const warmUpByte = (i: number): number => WARM_UP_TEXT.charCodeAt(i % WARM_UP_TEXT.length) ^ 0xff;

const DISK = 1024 * 1024;
const DATA = 64 * 1024;

/** A growable file in memory, writable, all of it data (as the host's SEEK_DATA answer would say). */
class MemoryFile {
  bytes = new Uint8Array(0);
  size = 0;
  get allocated(): number {
    return this.size;
  }
  get dataRuns(): [number, number][] {
    return this.size > 0 ? [[0, this.size]] : [];
  }
  // Arrow functions, as FdDevice's write and truncate are: callers may take them off the device.
  read = (buf: Uint8Array, pos: number): number => {
    if (pos >= this.size) return 0;
    const part = this.bytes.subarray(pos, Math.min(this.size, pos + buf.length));
    buf.set(part);
    return part.length;
  };
  write = (buf: Uint8Array, pos: number): void => {
    this.truncate(Math.max(this.size, pos + buf.length));
    this.bytes.set(buf, pos);
  };
  truncate = (size: number): void => {
    if (size > this.bytes.length) {
      const bigger = new Uint8Array(Math.max(size, this.bytes.length * 2));
      bigger.set(this.bytes.subarray(0, this.size));
      this.bytes = bigger;
    } else if (size < this.size) {
      this.bytes.fill(0, size, this.size);
    }
    this.size = size;
  };
  /** Reads as the warm-up's disk: its data, then zeros to `size`. */
  holdsDisk(size: number): boolean {
    return this.size === size && this.bytes.subarray(0, size).every((b, i) => b === (i < DATA ? warmUpByte(i) : 0));
  }
}

const profile = { major: 10, minor: 0, childNodes: true, dirtyFlag: true, mapCompressed: true, snapshotUnderscores: true, vhdCurrentSize: true, newUsageErrors: true, luksDetachedHeader: true };
const common = { unsafeQuirks: false, profile: { vhdCurrentSize: false }, secrets: {}, sparseSize: 4096, progress: false, salvage: false };
const sources = (format?: string) => [{ index: 0, fileName: 'warm-up', ...(format ? { format } : {}) }];
/** The host's requests (src/host/commands/convert.ts): 'open' before a -O qcow2, 'open-copy' into raw by two guests. */
const convert = (phase: ConvertOptions['phase'], format?: string, worker?: number): ConvertOptions => ({ ...common, phase, sources: sources(format), targetIsZero: true, coroutines: 8, ...(worker === undefined ? {} : { worker, workers: 2 }) });
const info = (format?: string): InfoOptions => ({ unsafeQuirks: false, fileName: 'warm-up', profile, ...(format ? { format } : {}) });
/** The plan's clock and "random" bytes: constants. */
const environment: CreateEnvironment = { now: 1_700_000_000, filename: 'warm-up', qemuVersion: '10.0.0', randomBytes: (n) => new Uint8Array(n).fill(0x5a) };

/** Runs one op as the guest would, on these files (the first the input, the rest outputs); its answer. */
async function run(ops: Record<string, Op>, op: string, options: object, input: MemoryFile, ...outputs: MemoryFile[]): Promise<Record<string, unknown>> {
  const specs: DeviceSpec[] = [{ fd: 4, role: 'input', writable: false }, ...outputs.map((_, i): DeviceSpec => ({ fd: 5 + i, role: 'output', writable: true }))];
  const ctx: OpContext = { devices: specs.map((spec, i) => ({ spec, dev: i === 0 ? input : outputs[i - 1] })), emit: () => {}, warn: () => {} };
  const value = (await ops[op](options as Record<string, unknown>, ctx)) as Record<string, unknown> | null;
  return value ?? {};
}

function expect(ok: boolean, what: string, value: unknown): void {
  if (!ok) throw new Error(`guest warm-up: ${what} answered ${JSON.stringify(value)}`);
}

/** Copies the image into a new raw file as the host's two guests would. */
async function copyToRaw(ops: Record<string, Op>, image: MemoryFile, format?: string): Promise<MemoryFile> {
  const out = new MemoryFile();
  for (const worker of [0, 1]) {
    const copied = await run(ops, 'convert', convert('open-copy', format, worker), image, out);
    expect(Array.isArray(copied.sizes), `convert open-copy of ${format ?? 'qcow2'}, guest ${worker}`, copied);
  }
  return out;
}

/** raw → qcow2 → raw, info on both, a probe that fails; throws when an answer is not the expected one. */
async function warmOps(ops: Record<string, Op>): Promise<void> {
  const raw = new MemoryFile();
  raw.truncate(DISK);
  for (let i = 0; i < DATA; i++) raw.bytes[i] = warmUpByte(i);
  const rawInfo = await run(ops, 'info', info('raw'), raw);
  expect(rawInfo.format === 'raw', 'info of raw', rawInfo);
  expect((await copyToRaw(ops, raw, 'raw')).holdsDisk(DISK), 'raw → raw', 'another disk');
  const opened = await run(ops, 'convert', convert('open', 'raw'), raw);
  expect(Array.isArray(opened.sizes), 'convert open of raw', opened);
  const qcow2 = new MemoryFile();
  const plan = findDriver('qcow2')!.create!.plan(new Map(), BigInt(DISK), environment);
  const written = await run(ops, 'convert-image', { ...common, format: 'qcow2', plan, sources: sources('raw'), compressed: false, layoutOnly: false, bitmaps: false } satisfies ConvertImageOptions, raw, qcow2);
  expect(typeof written.counted === 'number', 'convert-image to qcow2', written);
  const qcow2Info = await run(ops, 'info', info(), qcow2);
  expect(qcow2Info.format === 'qcow2', 'info of qcow2', qcow2Info);
  expect((await copyToRaw(ops, qcow2)).holdsDisk(DISK), 'qcow2 → raw', 'another disk');
  const junk = new MemoryFile();
  junk.write(raw.bytes.subarray(0, 4096), 0);
  const refused = await run(ops, 'info', info(), junk).catch((e: unknown) => e);
  expect(refused instanceof ImageError && refused.message.includes('Could not determine image format'), 'info of an unknown format', String(refused));
}

/**
 * Runs the ops once; then zeroes Buffer's pool from where they began to take from it to its end
 * (Buffer.allocUnsafe hands out slices of one shared ArrayBuffer, kept in the snapshot with its
 * bytes: what the ops left there, and the uninitialized rest). Rejects if an op answers other
 * than expected: the requests above no longer match the ops.
 */
export async function warmUp(ops: Record<string, Op>): Promise<void> {
  const before = Buffer.allocUnsafe(1);
  try {
    await warmOps(ops);
  } finally {
    const after = Buffer.allocUnsafe(1);
    new Uint8Array(before.buffer).fill(0, before.byteOffset);
    // The pool ran out meanwhile: the new one is all the ops'.
    if (after.buffer !== before.buffer) new Uint8Array(after.buffer).fill(0);
  }
}
