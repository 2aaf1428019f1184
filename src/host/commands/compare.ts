// `compare`, the trusted half. Order as in qemu-img: argument count, progress set up (so even a
// failed open ends with its "\n"), -T checked, image 1 opened, then image 2; open failures exit 2.
// The guest opens both trees in one op and returns stdout's transcript, which is checked line by
// line against the only texts compare prints before it reaches the terminal.
import { closeSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { usageError } from '../../cli/usage-error.ts';
import { OpError } from '../sandbox/run.ts';
import { cleanGuestError } from '../sandbox/guest-messages.ts';
import { nestedReason, runWithReferencedFiles, ReferencedFileError } from '../open-files.ts';
import { InputImageError, foreignOption, keyOptions, imageTarget, openTop, type Target } from '../input-image.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';
import type { CompareOptions, CompareResult } from '../../ops/compare.ts';
import { FLOAT_BITS, bitsToFloat } from '../../ops/compare-progress.ts';
import { strerrorNumber } from '../../strerror-number.ts';

/** Exit statuses of qemu-img compare besides 0 (identical) and 1 (different). */
const OPEN_FAILED = 2;
const READ_FAILED = 4;

const CACHE_MODES = new Set(['none', 'off', 'writeback', 'unsafe', 'directsync', 'writethrough']);

/** The only lines compare prints on stdout besides progress; anything else from a guest is refused. */
const ALLOWED_TEXT = /^(Images are identical\.|Warning: Image size mismatch!|Strict mode: Image size mismatch!|Content mismatch at offset \d{1,20}!|Strict mode: Offset \d{1,20} block status mismatch!)\n$/;
const MAX_EVENTS = 1024;

export class CompareError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

/** printf("%3.2f") of a C float: exact binary value, exact ties to even. */
function percent(value: number): string {
  const scaled = value * 100;
  if (Number.isInteger(scaled - 0.5)) {
    const down = Math.floor(scaled);
    return ((down % 2 === 0 ? down : down + 1) / 100).toFixed(2);
  }
  return value.toFixed(2);
}

const progressLine = (value: number) => `    (${percent(value)}/100%)\r`;

/** The guest's answer, checked before any of it reaches stdout. */
export function checkCompareResult(value: unknown): CompareResult {
  const r = (value ?? {}) as Record<string, unknown>;
  if (r.opened === false && (r.image === 0 || r.image === 1) && typeof r.message === 'string') return r as unknown as CompareResult;
  const f = (r.failure ?? {}) as Record<string, unknown>;
  const readFailure = () => Number.isSafeInteger(f.offset) && (f.offset as number) >= 0 && typeof f.reason === 'string' && f.reason.length <= 1024;
  // A size query's errno is any C int (sector-count.ts).
  const sizeFailure = () => Number.isInteger(f.sizeErrno) && f.sizeErrno === ((f.sizeErrno as number) | 0);
  const failureOk = r.failure === undefined ? r.status === 0 || r.status === 1
    : (f.image === 0 || f.image === 1) && f.status === r.status &&
      (f.status === 3 || (f.status === 4 && (readFailure() || sizeFailure())));
  const ok = r.opened === true && failureOk && Array.isArray(r.formats) && r.formats.every((f) => typeof f === 'string') &&
    Array.isArray(r.events) && r.events.length <= MAX_EVENTS &&
    r.events.every((e: unknown) => {
      const ev = (e ?? {}) as Record<string, unknown>;
      if ('progress' in ev) return typeof ev.progress === 'number' && ev.progress >= 0 && ev.progress < 1000; // float sums can pass 100
      return typeof ev.text === 'string' && ALLOWED_TEXT.test(ev.text);
    });
  if (!ok) throw new CompareError('the guest gave a malformed compare result', READ_FAILED);
  return r as unknown as CompareResult;
}

function options(cmd: ParsedCommand, targets: Target[], ctx: CommandContext, progress: boolean): CompareOptions {
  return {
    formats: [targets[0].format, targets[1]?.format],
    fileNames: [targets[0].path, targets[1]?.path ?? ''],
    strict: cmd.options.has('strict'),
    progress,
    unsafeQuirks: ctx.globals.unsafeQuirks,
    profile: ctx.profile,
    secrets: compareSecrets(cmd, targets),
    keyOptions: keyOptions(targets.filter((t) => t !== undefined)),
  };
}

/** --object errors end compare with status 2, as qemu's do. */
function compareSecrets(cmd: ParsedCommand, targets: Target[]): Record<number, string> {
  try {
    return sourceSecrets(cmd.options.get('object') ?? [], targets.filter((t) => t !== undefined));
  } catch (e) {
    if (e instanceof InputImageError) throw new CompareError(e.message, OPEN_FAILED);
    throw e;
  }
}

function target(cmd: ParsedCommand, index: 0 | 1): Target {
  const format = cmd.options.get(index === 0 ? 'a-format' : 'b-format')?.at(-1);
  return imageTarget(cmd.args[index], format, cmd.options.has('image-opts'), true);
}

/** Opens one named image on the host; qemu's words on failure. */
function openNamed(cmd: ParsedCommand, index: 0 | 1): { target: Target; fd: number } {
  try {
    const t = target(cmd, index);
    return { target: t, fd: openTop(t) };
  } catch (e) {
    if (e instanceof InputImageError) throw new CompareError(e.message, OPEN_FAILED);
    throw e;
  }
}

function openError(t: Target, message: string): CompareError {
  return new CompareError(`Could not open '${t.errorName}': ${message}`, OPEN_FAILED);
}

/** Runs the guest over both images (and the files they name). */
async function runCompare(cmd: ParsedCommand, ctx: CommandContext, progress: boolean): Promise<{ status: number; text: string; error?: string }> {
  const first = openNamed(cmd, 0);
  const fds = [first.fd];
  try {
    let second;
    try {
      second = openNamed(cmd, 1);
    } catch (e) {
      // qemu opens image 1 completely (format, backing chain) before it looks at image 2.
      await checkOpens(first, ctx, progress, cmd);
      throw e;
    }
    fds.push(second.fd);
    const targets = [first.target, second.target];
    const inputs = targets.map((t, i) => ({ fd: fds[i], path: t.path }));
    // Live lines from the guest (-p only): progress as float bits, {0, 0} for the size warning.
    const onProgress = (done: number, total: number) => {
      if (total === 0 && done === 0) ctx.out('Warning: Image size mismatch!\n');
      else if (total === FLOAT_BITS && Number.isInteger(done) && done < FLOAT_BITS) {
        const value = bitsToFloat(done);
        if (value >= 0 && value < 1000) ctx.out(progressLine(value));
      }
    };
    const live = { ...ctx, run: { ...ctx.run, onProgress: progress ? onProgress : undefined } };
    let result: CompareResult;
    try {
      result = checkCompareResult(await runWithReferencedFiles('compare', { ...options(cmd, targets, ctx, progress) }, inputs, live));
    } catch (e) {
      if (e instanceof ReferencedFileError) {
        // Which image, and how deep: each one alone says it as qemu does.
        await checkOpens(first, ctx, progress, cmd);
        await checkOpens({ target: second.target, fd: second.fd }, ctx, progress, cmd);
        throw openError(e.file.referrer === 1 ? targets[1] : targets[0], e.message);
      }
      if (e instanceof OpError) throw new CompareError(e.message, READ_FAILED);
      throw e;
    }
    if (!result.opened) throw openError(targets[result.image], result.message);
    for (const i of [0, 1] as const) {
      const option = foreignOption(targets[i], result.formats[i]);
      if (option !== undefined) throw openError(targets[i], `Block format '${result.formats[i]}' does not support the option '${option}'`);
    }
    const text = result.events.map((ev) => ('progress' in ev ? progressLine(ev.progress) : ev.text)).join('');
    if ('failure' in result) {
      // qemu names the image as it was given on the command line.
      const f = result.failure;
      const name = cmd.args[f.image];
      const message = f.status === 3 ? `Sector allocation test failed for ${name}`
        : 'sizeErrno' in f ? `Can't get size of ${name}: ${strerrorNumber(f.sizeErrno)}`
          : `Error while reading offset ${f.offset} of ${name}: ${cleanGuestError(f.reason).split('\n')[0]}`;
      return { status: f.status, text, error: message };
    }
    return { status: result.status, text };
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/**
 * Opens one image alone in the guest (format, backing chain) and throws qemu's error if that fails.
 * Used when something failed and qemu's message depends on which image and how deep: image 1 is
 * opened completely before image 2, and a missing file n levels down is prefixed n times.
 */
async function checkOpens(image: { target: Target; fd: number }, ctx: CommandContext, progress: boolean, cmd: ParsedCommand): Promise<void> {
  const opts = { ...options(cmd, [image.target], ctx, progress), openFirstOnly: true };
  let result: CompareResult;
  try {
    result = checkCompareResult(await runWithReferencedFiles('compare', { ...opts }, [{ fd: image.fd, path: image.target.path }], ctx));
  } catch (e) {
    if (e instanceof ReferencedFileError) {
      throw openError(image.target, nestedReason(e));
    }
    if (e instanceof OpError) throw openError(image.target, e.message);
    throw e;
  }
  if (!result.opened) throw openError(image.target, result.message);
}

export const compare: Command = async (cmd, ctx) => {
  // qemu creates each --object as its option comes: a bad one stops compare there (status 2).
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object' && !addObject(objects, value, ctx.err, ctx.progname)) return OPEN_FAILED;
  }
  if (cmd.args.length !== 2) return usageError(ctx, cmd, 'Expecting two image file names');
  // -q silences progress; -U, --object and a valid -T change nothing for a read-only compare.
  const progress = cmd.options.has('progress') && !cmd.options.has('quiet');
  const quiet = cmd.options.has('quiet');
  const end = () => {
    if (progress) ctx.out('\n');
  };
  const cache = cmd.options.get('cache')?.at(-1);
  if (cache !== undefined && !CACHE_MODES.has(cache)) {
    ctx.err(`${ctx.progname}: Invalid source cache option: ${cache}\n`);
    end();
    return OPEN_FAILED;
  }
  try {
    const { status, text, error } = await runCompare(cmd, ctx, progress);
    if (!quiet) ctx.out(text);
    if (error !== undefined) ctx.err(`${ctx.progname}: ${error}\n`);
    end();
    return status;
  } catch (e) {
    if (e instanceof CompareError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      end();
      return e.status;
    }
    throw e;
  }
};
