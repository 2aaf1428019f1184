// The typed library API: each function runs exactly what the CLI runs (same parsing, sandbox,
// path policy and output profile) and returns qemu-img's JSON as typed values.
import { runCommandLine } from './cli/run.ts';
import type { FormatSpecific, SnapshotInfo } from './formats/types.ts';

export interface CommonOptions {
  /** Where image bytes are parsed: 'auto' (default), 'strict' or 'none' (trusted input only). */
  sandbox?: 'auto' | 'strict' | 'none';
  /** qemu-img version whose behaviour to reproduce ('7.2', '10.0'); default as the CLI. */
  qemuVersion?: string;
  /** More directories that files named by images may be opened from. */
  allowPaths?: string[];
  /** The image format; detected when absent. */
  format?: string;
}

/** QAPI ImageInfo as `qemu-img info --output=json` prints it. */
export interface ImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'cluster-size'?: number;
  'dirty-flag'?: boolean;
  encrypted?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: SnapshotInfo[];
  'format-specific'?: FormatSpecific;
  children?: { name: string; info: ImageInfo }[];
}

/**
 * A byte position or count from `map`: a number when it is a safe integer (|n| < 2^53), else a
 * bigint holding qemu's int64 exactly. Virtual sizes reach 2^63 and a VMDK flat extent can put a
 * host offset anywhere in int64 (2^62 + 512 has no double). `BigInt(v)` handles both kinds.
 */
export type ByteValue = number | bigint;

/** One entry of `qemu-img map --output=json`, with exact positions (see ByteValue). */
export interface MapEntry {
  start: ByteValue;
  length: ByteValue;
  depth: number;
  present?: boolean;
  zero: boolean;
  data: boolean;
  compressed?: boolean;
  offset?: ByteValue;
}

/** A command that ended with a non-zero status; `message` is its error text. */
export class InstarError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = 'InstarError';
  }
}

function globalArgs(o: CommonOptions): string[] {
  const args: string[] = [];
  if (o.sandbox) args.push(`--sandbox=${o.sandbox}`);
  if (o.qemuVersion) args.push('--qemu-version', o.qemuVersion);
  for (const dir of o.allowPaths ?? []) args.push('--allow-path', dir);
  return args;
}

async function run(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await runCommandLine(args, {
    out: (t) => void (stdout += t),
    err: (t) => void (stderr += t),
    env: process.env,
    cwd: process.cwd(),
    argv1: 'instar',
  });
  return { status, stdout, stderr };
}

async function runOk(args: string[]): Promise<string> {
  const r = await run(args);
  if (r.status !== 0) throw new InstarError(r.stderr.trim().replace(/^instar: /, ''), r.status);
  return r.stdout;
}

/** `qemu-img info --output=json`: one image, or the whole chain with `backingChain`. */
export async function info(file: string, opts?: CommonOptions & { backingChain?: false }): Promise<ImageInfo>;
export async function info(file: string, opts: CommonOptions & { backingChain: true }): Promise<ImageInfo[]>;
export async function info(file: string, opts: CommonOptions & { backingChain?: boolean } = {}): Promise<ImageInfo | ImageInfo[]> {
  const args = ['info', ...globalArgs(opts), '--output=json'];
  if (opts.format) args.push('-f', opts.format);
  if (opts.backingChain) args.push('--backing-chain');
  return JSON.parse(await runOk([...args, '--', file]));
}

/**
 * JSON.parse for map's output, keeping integers exact: JSON.parse would round any past 2^53.
 * map's JSON has no string values, so each long digit run is quoted first and revived as a bigint.
 */
function parseMapJson(text: string): MapEntry[] {
  const quoted = text.replace(/-?\d{16,}/g, (digits) => `"${digits}"`);
  return JSON.parse(quoted, (_key, value: unknown) => {
    if (typeof value !== 'string') return value;
    const n = BigInt(value);
    return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
  }) as MapEntry[];
}

/** `qemu-img map --output=json`; positions past 2^53 come back as bigints (MapEntry). */
export async function map(file: string, opts: CommonOptions & { startOffset?: ByteValue; maxLength?: ByteValue } = {}): Promise<MapEntry[]> {
  const args = ['map', ...globalArgs(opts), '--output=json'];
  if (opts.format) args.push('-f', opts.format);
  if (opts.startOffset !== undefined) args.push(`--start-offset=${opts.startOffset}`);
  if (opts.maxLength !== undefined) args.push(`--max-length=${opts.maxLength}`);
  return parseMapJson(await runOk([...args, '--', file]));
}

/** `qemu-img compare`: whether two images have the same guest-visible content. */
export async function compare(a: string, b: string, opts: CommonOptions & { formatB?: string; strict?: boolean } = {}): Promise<{ identical: boolean; message: string }> {
  const args = ['compare', ...globalArgs(opts)];
  if (opts.format) args.push('-f', opts.format);
  if (opts.formatB) args.push('-F', opts.formatB);
  if (opts.strict) args.push('-s');
  const r = await run([...args, '--', a, b]);
  if (r.status === 0 || r.status === 1) return { identical: r.status === 0, message: r.stdout.trim() };
  throw new InstarError(r.stderr.trim().replace(/^instar: /, ''), r.status);
}

/** `qemu-img convert`: copies `source` into a new `target` (raw unless `outputFormat` says). */
export async function convert(source: string, target: string, opts: CommonOptions & { outputFormat?: string; sparseSize?: string; snapshot?: string } = {}): Promise<void> {
  const args = ['convert', ...globalArgs(opts), '-q'];
  if (opts.format) args.push('-f', opts.format);
  args.push('-O', opts.outputFormat ?? 'raw');
  if (opts.sparseSize !== undefined) args.push('-S', opts.sparseSize);
  if (opts.snapshot !== undefined) args.push('-l', opts.snapshot);
  await runOk([...args, '--', source, target]);
}

/** QAPI ImageCheck as `qemu-img check --output=json` prints it. */
export interface ImageCheck {
  filename: string;
  format: string;
  'check-errors': number;
  'image-end-offset'?: number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
}

/**
 * `qemu-img check --output=json` (with `repair`, check -r). `status` is qemu-img's: 0 clean, 2
 * corruptions left, 3 leaks left; a check that could not run (1, or 63 for a format without
 * checks) throws.
 */
export async function check(file: string, opts: CommonOptions & { repair?: 'leaks' | 'all' } = {}): Promise<{ status: number; report: ImageCheck }> {
  const args = ['check', ...globalArgs(opts), '--output=json'];
  if (opts.format) args.push('-f', opts.format);
  if (opts.repair) args.push('-r', opts.repair);
  const r = await run([...args, '--', file]);
  if (r.status === 0 || r.status === 2 || r.status === 3) return { status: r.status, report: JSON.parse(r.stdout) as ImageCheck };
  throw new InstarError(r.stderr.trim().replace(/^instar: /, ''), r.status);
}

/** QAPI BlockMeasureInfo as `qemu-img measure --output=json` prints it. */
export interface MeasureInfo {
  required: number;
  'fully-allocated': number;
  bitmaps?: number;
}

/** `qemu-img measure --output=json`: of an input image (`file`) or of a disk of `size`. */
export async function measure(input: { file: string } | { size: string }, opts: CommonOptions & { outputFormat?: string; options?: string; snapshot?: string } = {}): Promise<MeasureInfo> {
  const args = ['measure', ...globalArgs(opts), '--output=json', '-O', opts.outputFormat ?? 'raw'];
  if (opts.options !== undefined) args.push('-o', opts.options);
  if (opts.snapshot !== undefined) args.push('-l', opts.snapshot);
  if ('size' in input) return JSON.parse(await runOk([...args, '--size', input.size])) as MeasureInfo;
  if (opts.format) args.push('-f', opts.format);
  return JSON.parse(await runOk([...args, '--', input.file])) as MeasureInfo;
}

/** `qemu-img create`: a new image of `format` (`size` as qemu-img takes it, e.g. '10G'). */
export async function create(file: string, format: string, size?: string, opts: Omit<CommonOptions, 'format'> & { options?: string; backingFile?: string; backingFormat?: string } = {}): Promise<void> {
  const args = ['create', ...globalArgs(opts), '-q', '-f', format];
  if (opts.options !== undefined) args.push('-o', opts.options);
  if (opts.backingFile !== undefined) args.push('-b', opts.backingFile);
  if (opts.backingFormat !== undefined) args.push('-F', opts.backingFormat);
  await runOk([...args, '--', file, ...(size !== undefined ? [size] : [])]);
}

/** `qemu-img resize`: `size` absolute ('20G') or relative ('+1G', '-512M' with `shrink`). */
export async function resize(file: string, size: string, opts: CommonOptions & { shrink?: boolean; preallocation?: string } = {}): Promise<void> {
  const args = ['resize', ...globalArgs(opts), '-q'];
  if (opts.format) args.push('-f', opts.format);
  if (opts.shrink) args.push('--shrink');
  if (opts.preallocation !== undefined) args.push(`--preallocation=${opts.preallocation}`);
  await runOk([...args, '--', file, size]);
}
