// The guest half of `resize`: opens the image read-write as qemu-img resize does, works out the
// new size from the current one (qemu's int64 arithmetic, wrap-around included), makes qemu-img's
// and its block layer's checks in their order, then asks the format's resize planner for the
// writes and applies them through the repair executor (formats/repair.ts).
import { ImageError, type ResizeRequest } from '../formats/types.ts';
import { findDriver } from '../formats/registry.ts';
import { applyRepair, writeCount, type RepairStep } from '../formats/repair.ts';
import { strerror } from '../strerror.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { OpContext } from './types.ts';
import { backingSize } from './backing-size.ts';

/** qemu's BDRV_MAX_LENGTH: INT64_MAX rounded down to a 1 GiB multiple. */
const BDRV_MAX_LENGTH = 9223372035781033984n;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export type Preallocation = ResizeRequest['preallocation'];

export interface ResizeOptions extends OpenTreeOptions {
  /** The size as qemu_opt_get_size read it (decimal uint64), without its sign. */
  amount: string;
  /** '+' or '-' before the size: relative to the current size. */
  sign?: '+' | '-';
  shrink: boolean;
  /** --preallocation, absent when not given (qemu then uses off, but skips its growing-only check). */
  preallocation?: Preallocation;
  /** Open the image, report its format and write nothing (the host refuses an option first). */
  openOnly?: boolean;
  /** Tests only: stop after this many writes (crash simulation). */
  stopAfterWrites?: number;
}

export type ResizeResult =
  | { format: string; resized: true }
  /** openOnly: the image opened; nothing was written. */
  | { format: string; opened: true }
  /** qemu's refusal without --shrink (an error and a warning line). */
  | { format: string; shrinkRefused: true }
  /** A qemu error message, printed after "qemu-img: ". */
  | { format: string; error: string };

const PREALLOCATIONS = new Set<string>(['off', 'metadata', 'falloc', 'full']);

/** qemu-img resize's size arithmetic: int64 sums that wrap as the C code's do. */
export function newSize(current: bigint, amount: bigint, sign: '+' | '-' | undefined): bigint {
  const n = BigInt.asIntN(64, amount);
  if (sign === undefined) return n;
  return BigInt.asIntN(64, sign === '+' ? current + n : current - n);
}

export function resizeOp(options: Record<string, unknown>, ctx: OpContext): ResizeResult {
  const opts = options as unknown as ResizeOptions;
  if (typeof opts.amount !== 'string' || !/^[0-9]{1,20}$/.test(opts.amount)) throw new ImageError('resize: a bad size request');
  const prealloc = opts.preallocation;
  if (prealloc !== undefined && !PREALLOCATIONS.has(prealloc)) throw new ImageError('resize: a bad preallocation mode');
  const image = openTree(ctx, 0, opts);
  const format = image.format;
  if (opts.openOnly) return { format, opened: true };
  const current = BigInt(image.virtualSize);
  const total = newSize(current, BigInt(opts.amount), opts.sign);
  const capability = findDriver(format)?.resize;
  const input = ctx.devices[0];
  // A failure after the open: what qemu's writable open and close write anyway (qcow2 bitmaps).
  const failed = (result: ResizeResult): ResizeResult => {
    let steps: RepairStep[] | undefined;
    try {
      steps = input?.dev.write ? capability?.openClose?.(input.dev) : undefined;
    } catch (e) {
      // instar's refusal of the image (nothing written) comes instead of qemu's failure.
      if (e instanceof ImageError) return { format, error: e.message };
      throw e;
    }
    if (steps?.length) applyRepair(input.dev, steps, { stopAfterWrites: opts.stopAfterWrites });
    return result;
  };
  if (total <= 0n) return failed({ format, error: 'New image size must be positive' });
  if (prealloc !== undefined && prealloc !== 'off' && total <= current) return failed({ format, error: 'Preallocation can only be used for growing images' });
  if (total < current && !opts.shrink) return failed({ format, shrinkRefused: true });
  // bdrv_co_truncate's own checks, before it asks the driver.
  if (total > BDRV_MAX_LENGTH) return failed({ format, error: `offset(${total}) exceeds maximum(${BDRV_MAX_LENGTH})` });
  if (!capability) return { format, error: 'Image format driver does not support resize' };
  if (!input?.dev.write || !input.dev.truncate) throw new ImageError('the image was not opened for writing');
  if (total > SAFE) return { format, error: tooLarge(format, input.dev.truncate, input.dev.size) };
  const request: ResizeRequest = { newSize: Number(total), preallocation: prealloc ?? 'off' };
  const backing = backingSize(ctx, image.info()['backing-filename-format'], opts);
  if (backing !== undefined) request.backingSize = backing;
  request.readGuest = (buf, offset) => image.read(buf, offset);
  const dataFile = ctx.devices.find((d) => d.spec.role === 'data-file' && d.spec.referrer === 0 && d.spec.writable);
  if (dataFile) request.dataFile = dataFile.dev;
  // From here on the image is open: a failure is the resize's, not the open's.
  let plan;
  try {
    plan = capability.plan(image, input.dev, request);
  } catch (e) {
    if (e instanceof ImageError) return { format, error: e.message };
    throw e;
  }
  const steps = 'error' in plan ? plan.written ?? [] : plan.steps;
  if ('error' in plan && steps.length === 0) return { format, error: plan.error };
  // The data file grows before the image says so and shrinks after: a crash between leaves it
  // longer than the disk, which qemu reads as it should.
  const dataFileLength = 'steps' in plan ? plan.dataFileLength : undefined;
  const growData = dataFileLength !== undefined && dataFileLength > (request.dataFile?.size ?? 0);
  try {
    if (growData) request.dataFile!.truncate!(dataFileLength);
    applyRepair(input.dev, steps, { stopAfterWrites: opts.stopAfterWrites });
    // (A crash simulation that stopped inside the steps stops before it.)
    if (dataFileLength !== undefined && !growData && writeCount(steps) <= (opts.stopAfterWrites ?? Infinity)) request.dataFile!.truncate!(dataFileLength);
  } catch (e) {
    if (e instanceof ImageError) return { format, error: e.message };
    const failure = rawPreallocationFailure(e, format, request.preallocation, () => input.dev.truncate!(Number(current))) ?? fileFailure(e, steps);
    if (failure === undefined) throw e;
    return { format, error: failure };
  }
  return 'error' in plan ? { format, error: plan.error } : { format, resized: true };
}

/**
 * A size past what instar's offsets hold exactly (2^53 - 1): a raw file system refuses it the way
 * qemu's ftruncate would be refused (ext4's limit is 16 TiB), which is tried on the largest exact
 * length and undone; one that takes it (tmpfs) is refused in instar's words.
 */
function tooLarge(format: string, truncate: (size: number) => void, size: number): string {
  const refusal = `instar cannot resize images past ${SAFE} bytes`;
  if (format !== 'raw') return refusal;
  try {
    truncate(Number.MAX_SAFE_INTEGER);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EFBIG' || code === 'EINVAL') return `Could not resize file: ${strerror(code)}`;
    throw e;
  }
  truncate(size);
  return refusal;
}

/**
 * A raw file's growth the file system could not preallocate (ENOSPC): qemu's file protocol puts
 * the old length back and names the mode that failed.
 */
function rawPreallocationFailure(e: unknown, format: string, mode: Preallocation, restore: () => void): string | undefined {
  const err = e as NodeJS.ErrnoException;
  if (format !== 'raw' || (mode !== 'falloc' && mode !== 'full') || typeof err?.code !== 'string' || err.syscall === 'ftruncate') return undefined;
  restore();
  return `${mode === 'full' ? 'Could not write zeros for preallocation' : 'Could not preallocate new data'}: ${strerror(err.code)}`;
}

/** qemu's words for a file length change the file system refused (EFBIG, ENOSPC). */
function fileFailure(e: unknown, steps: readonly RepairStep[]): string | undefined {
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.code !== 'string') return undefined;
  if (err.syscall === 'ftruncate' || steps.some((s) => s.kind === 'truncate')) return `Could not resize file: ${strerror(err.code)}`;
  return undefined;
}
