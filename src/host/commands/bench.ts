// `bench`, the trusted half. Options are checked in qemu-img's order (inside its getopt loop, the
// first bad value wins), then the file name count and the flush-interval rules; the image is
// opened read-only (read-write with -w) and one guest opens it and runs the requests (ops/bench.ts).
// The host prints qemu's lines. A -w run writes raw and qcow2 images (ops/bench.ts); the host fsyncs the file after the
// guest exits (the guest cannot: its permission model refuses fsync), standing in for qemu's
// flushes (--flush-interval, and the one when it closes the image).
import { closeSync, fsyncSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { OpError } from '../sandbox/run.ts';
import { ReferencedFileError } from '../open-files.ts';
import { InputImageError, openTop, referencedOpenMessage, topTarget, type Target, guestFormat } from '../input-image.ts';
import { openWritable, PROBED_RAW_WARNING, runRepairingDirty } from '../writable-image.ts';
import { parseSecretObjects, sourceSecrets } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { INT64_MAX, INT_MAX, parseIntegerOption, parseSizeOption, parseUnsignedOption, type Parsed } from './qemu-numbers.ts';
import type { Profile } from '../../output/profile.ts';
import type { BenchOptions, BenchResult } from '../../ops/bench.ts';
import { printErrorLines } from './error-lines.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

class BenchError extends InputImageError {}

/** bdrv_parse_cache_mode's names; none, off and directsync bypass the page cache (cache.direct). */
const CACHE_MODES = new Set(['none', 'off', 'writeback', 'unsafe', 'directsync', 'writethrough']);
const DIRECT = new Set(['none', 'off', 'directsync']);
const AIO_MODES = new Set(['threads', 'native', 'io_uring']);

interface Settings {
  count: number;
  depth: number;
  offset: bigint;
  bufsize: number;
  step: number;
  pattern: number;
  flushInterval: number;
  write: boolean;
  cache: string;
  native: boolean;
}

/** One numeric option by the profile's parser: 7.2's qemu_strtoul ones, else cvtnum_full. */
function numeric(key: string, text: string, p: Profile): Parsed {
  const v10 = p.newUsageErrors;
  switch (key) {
    case 'count':
      return v10 ? parseIntegerOption('request count', text, 1n, INT_MAX) : parseUnsignedOption('Invalid request count specified', text, INT_MAX);
    case 'depth':
      return v10 ? parseIntegerOption('queue depth', text, 1n, INT_MAX) : parseUnsignedOption('Invalid queue depth specified', text, INT_MAX);
    case 'offset':
      return parseSizeOption('offset', text, 0n, INT64_MAX, p);
    case 'buffer-size':
      return parseSizeOption('buffer size', text, v10 ? 1n : 0n, INT_MAX, p);
    case 'step-size':
      return parseSizeOption(v10 ? 'step size' : 'step_size', text, 0n, INT_MAX, p);
    case 'pattern':
      return v10 ? parseIntegerOption('pattern byte', text, 0n, 255n) : parseUnsignedOption('Invalid pattern byte specified', text, 255n);
    default:
      return v10 ? parseIntegerOption('flush interval', text, 0n, INT_MAX) : parseUnsignedOption('Invalid flush interval specified', text, INT_MAX);
  }
}

const NUMERIC = new Set(['count', 'depth', 'offset', 'buffer-size', 'step-size', 'pattern', 'flush-interval']);

function settings(cmd: ParsedCommand, ctx: CommandContext): Settings {
  const s: Settings = { count: 75000, depth: 64, offset: 0n, bufsize: 4096, step: 0, pattern: 0, flushInterval: 0, write: false, cache: 'writeback', native: false };
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (NUMERIC.has(key)) {
      const r = numeric(key, value, ctx.profile);
      if ('error' in r) throw new BenchError(r.error.join('\n'));
      if (r.warning) ctx.err(`${ctx.progname}: ${r.warning}\n`);
      const n = Number(r.value);
      if (key === 'count') s.count = n;
      else if (key === 'depth') s.depth = n;
      else if (key === 'offset') s.offset = r.value;
      else if (key === 'buffer-size') s.bufsize = n;
      else if (key === 'step-size') s.step = n;
      else if (key === 'pattern') s.pattern = n;
      else s.flushInterval = n;
    } else if (key === 'cache') {
      if (!CACHE_MODES.has(value)) throw new BenchError('Invalid cache mode');
      s.cache = value;
    } else if (key === 'aio') {
      if (!AIO_MODES.has(value)) throw new BenchError(`Invalid aio option: ${value}`);
      if (value === 'native') s.native = true;
    } else if (key === 'native') s.native = true;
    else if (key === 'write') s.write = true;
    else if (key === 'object') {
      // qemu creates each --object as its option comes (a bad one stops the command there).
      objects.push(value);
      parseSecretObjects(objects);
    }
  }
  return s;
}

/** Opens the image as qemu's img_open does for bench: read-write with -w, refusing what qemu refuses first. */
function openImage(cmd: ParsedCommand, target: Target, s: Settings): number {
  if (!s.write) return openTop(target);
  // writethrough and directsync flush after every write: O_DSYNC does that for the guest's writes.
  return openWritable(cmd, target, s.cache === 'writethrough' || s.cache === 'directsync');
}

function validResult(raw: unknown): BenchResult {
  const r = (raw ?? {}) as Record<string, unknown>;
  const text = (v: unknown) => typeof v === 'string' && v.length > 0 && v.length < 512 && !/[\0-\x1f]/.test(v);
  if (typeof r.format === 'string' && /^[a-z0-9]{1,16}$/.test(r.format)) {
    if (r.sizeFailed === true) return { format: r.format, sizeFailed: true };
    if (r.faulted === true) return { format: r.format, faulted: true };
    if (text(r.refused)) return { format: r.format, refused: r.refused as string };
    if (text(r.failed)) return { format: r.format, failed: r.failed as string };
    if (typeof r.seconds === 'number' && Number.isFinite(r.seconds) && r.seconds >= 0) return { format: r.format, seconds: r.seconds };
  }
  throw new BenchError('the guest gave a malformed answer');
}

/** qemu allocates depth * bufsize bytes, multiplied as C ints: past INT_MAX the product wraps, and its allocation aborts. */
function wrappedBufferSize(s: Settings): bigint | undefined {
  const product = BigInt.asIntN(32, BigInt(s.depth) * BigInt(s.bufsize));
  return product < 0n ? BigInt.asUintN(64, product) : undefined;
}

async function runBench(cmd: ParsedCommand, ctx: CommandContext): Promise<number> {
  const s = settings(cmd, ctx);
  if (cmd.args.length !== 1) return usageError(ctx, cmd, 'Expecting one image file name');
  if (!s.write && s.flushInterval) throw new BenchError('--flush-interval is only available in write tests');
  if (s.flushInterval && s.flushInterval < s.depth) throw new BenchError("Flush interval can't be smaller than depth");
  const target = topTarget(cmd, cmd.args[0]);
  const secrets = sourceSecrets(cmd.options.get('object') ?? [], [target]);
  const fd = openImage(cmd, target, s);
  let result: BenchResult;
  const wrapped = wrappedBufferSize(s);
  // 7.2 takes -d 0 and then waits forever for a request it never sends.
  const stalls = s.depth === 0 && s.count > 0;
  try {
    // The file driver refuses aio=native without O_DIRECT once it has opened the file.
    if (s.native && !DIRECT.has(s.cache)) throw new BenchError(`Could not open '${target.errorName}': aio=native was specified, but it requires cache.direct=on, which was not specified.`);
    const options: BenchOptions = {
      format: guestFormat(target.format),
      fileName: target.path,
      unsafeQuirks: ctx.globals.unsafeQuirks,
      profile: { vhdCurrentSize: ctx.profile.vhdCurrentSize },
      secrets,
      write: s.write,
      // Only the open, when qemu never gets to its requests.
      count: wrapped !== undefined || stalls ? 0 : s.count,
      bufsize: s.bufsize,
      step: s.step || s.bufsize,
      offset: s.offset.toString(),
      pattern: s.pattern,
      zeroSizeFaults: !ctx.profile.newUsageErrors,
    };
    try {
      // bench -w opens the image for writing: a dirty qcow2 is repaired first, as qemu's open does.
      result = validResult(await runRepairingDirty('bench', options, [{ fd, path: target.path, writable: s.write }], ctx, target));
    } catch (e) {
      if (e instanceof InputImageError) throw new BenchError(e.message);
      if (e instanceof ReferencedFileError) throw new BenchError(referencedOpenMessage(e, target));
      if (e instanceof OpError) throw new BenchError(`Could not open '${target.errorName}': ${e.message}`);
      throw e;
    }
    if (s.write && s.cache !== 'unsafe') fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  if (s.write && target.format === undefined && result.format === 'raw') ctx.err(PROBED_RAW_WARNING(target.path));
  if (target.unknownFormatOption !== undefined) {
    throw new BenchError(`Could not open '${target.errorName}': Block format '${result.format}' does not support the option '${target.unknownFormatOption}'`);
  }
  if ('refused' in result) throw new BenchError(result.refused);
  // qemu stops without a word when it cannot tell the image's size.
  if ('sizeFailed' in result) return 1;
  if (wrapped !== undefined) {
    // qemu aborts before its buffered first line reaches a pipe.
    ctx.err(`qemu_memalign: failed to allocate ${wrapped} bytes at alignment 4096: Cannot allocate memory\n`);
    return 134;
  }
  // 7.2 divides by the empty image's size and dies of SIGFPE (128 + 8), its buffered line unwritten.
  if ('faulted' in result) return 136;
  ctx.out(`Sending ${s.count} ${s.write ? 'write' : 'read'} requests, ${s.bufsize} bytes each, ${s.depth} in parallel ` +
    `(starting at offset ${s.offset}, step size ${s.step || s.bufsize})\n`);
  if (s.flushInterval) ctx.out(`Sending flush every ${s.flushInterval} requests\n`);
  if (stalls) throw new BenchError('-d 0 sends no request: qemu-img waits forever here, instar stops');
  if ('failed' in result) throw new BenchError(`Failed request: ${result.failed}`);
  ctx.out(`Run completed in ${result.seconds.toFixed(3)} seconds.\n`);
  return 0;
}

export const bench: Command = async (cmd, ctx) => {
  try {
    return await runBench(cmd, ctx);
  } catch (e) {
    if (e instanceof InputImageError) {
      printErrorLines(ctx, e.message);
      return 1;
    }
    throw e;
  }
};
