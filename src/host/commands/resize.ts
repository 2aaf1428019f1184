// `resize`: the trusted half. Checks qemu-img's options in its order (--object and --preallocation
// inside the getopt loop, then the argument count, then the size), opens the image read-write
// (O_DSYNC: each of the guest's writes is durable before the next; files it names only through
// the path policy), lets a guest plan and apply the resize, fsyncs, and prints what qemu-img does.
import { fstatSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import { EXTRA_ARGUMENT, type ParsedCommand } from '../../cli/types.ts';
import { InputImageError, topTarget, guestFormat } from '../input-image.ts';
import { openWritable, PROBED_RAW_WARNING, runOnImage, writableDataFile } from '../writable-image.ts';
import { PreallocationFailure, reserveBlocks } from '../preallocate.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { strtosz } from './map-size.ts';
import type { Preallocation, ResizeOptions } from '../../ops/resize.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

const UINT64_MAX = 2n ** 64n - 1n;
const PREALLOCATIONS: readonly string[] = ['off', 'metadata', 'falloc', 'full'];

/** What a probed raw image opened for writing makes qemu's block layer print. */
const SHRINK_REFUSED = 'Use the --shrink option to perform a shrink operation.\n';
const SHRINK_WARNING = "warning: Shrinking an image will delete all data beyond the shrunken image's end. " +
  'Before performing such an operation, make sure there is no important data there.\n';

interface ResizeArgs {
  fileName: string;
  amount: bigint;
  sign?: '+' | '-';
  preallocation?: Preallocation;
}

/** The getopt loop's checks, the argument count, then the size as qemu's QemuOpts parses it. */
function parseArgs(cmd: ParsedCommand, ctx: CommandContext): ResizeArgs | number {
  const fail = (text: string) => {
    ctx.err(`${ctx.progname}: ${text}\n`);
    return 1;
  };
  const objects: string[] = [];
  let preallocation: Preallocation | undefined;
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object') {
      if (!addObject(objects, value, ctx.err, ctx.progname)) return 1;
    } else if (key === 'preallocation') {
      if (!PREALLOCATIONS.includes(value)) return fail(`Invalid preallocation mode '${value}'`);
      preallocation = value as Preallocation;
    } else if (key === EXTRA_ARGUMENT) {
      return usageError(ctx, cmd, 'Extra argument(s) in command line');
    }
  }
  if (cmd.args.length !== 2) return usageError(ctx, cmd, 'Expecting image file name and size');
  const [fileName, sizeText] = cmd.args;
  const sign = sizeText.startsWith('+') ? '+' : sizeText.startsWith('-') ? '-' : undefined;
  const text = sign ? sizeText.slice(1) : sizeText;
  const r = strtosz(text, ctx.profile.newUsageErrors, UINT64_MAX);
  if (r === 'range') return fail(`Value '${text}' is out of range for parameter 'size'`);
  if (r === 'invalid') {
    return fail("Parameter 'size' expects a non-negative number below 2^64\n" +
      'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.');
  }
  if (r.hexSuffix) ctx.err(`${ctx.progname}: warning: Using a multiplier suffix on hex numbers is deprecated: ${text}\n`);
  return { fileName, amount: r.value, sign, preallocation };
}

async function runResize(cmd: ParsedCommand, args: ResizeArgs, ctx: CommandContext): Promise<number> {
  const target = topTarget(cmd, args.fileName);
  // resize has no -U: openWritable's force-share refusal comes from --image-opts only.
  const fd = openWritable(cmd, target);
  const options: ResizeOptions = {
    format: guestFormat(target.format),
    unsafeQuirks: ctx.globals.unsafeQuirks,
    fileName: target.path,
    profile: ctx.profile,
    secrets: sourceSecrets(cmd.options.get('object') ?? [], [target]),
    amount: args.amount.toString(),
    sign: args.sign,
    shrink: cmd.options.has('shrink'),
    preallocation: args.preallocation,
    // An --image-opts option the format lacks fails qemu's open: the guest only names the format.
    openOnly: target.unknownFormatOption !== undefined,
  };
  // --preallocation=falloc: qemu's file protocol reserves the file's growth (fallocate); the
  // guest cannot, so the host reserves what the guest's resize left as holes past the old end.
  const oldLength = fstatSync(fd).size;
  let reserveFailure: string | undefined;
  const reserveGrowth = (answer: unknown) => {
    if ((answer as { resized?: unknown } | null)?.resized !== true) return;
    try {
      reserveBlocks(fd, fstatSync(fd).size, oldLength);
    } catch (e) {
      if (!(e instanceof PreallocationFailure)) throw e;
      reserveFailure = e.message;
    }
  };
  // A qcow2 external data file is cut or grown with the image (qemu truncates it too).
  const dataFile = writableDataFile();
  let answer: unknown;
  try {
    answer = await runOnImage('resize', options, fd, target, ctx, true, args.preallocation === 'falloc' ? reserveGrowth : undefined, dataFile.hooks);
  } finally {
    dataFile.close();
  }
  const result = validResult(answer);
  if (target.format === undefined && result.format === 'raw') ctx.err(PROBED_RAW_WARNING(target.path));
  if (target.unknownFormatOption !== undefined) {
    throw new InputImageError(`Could not open '${target.errorName}': Block format '${result.format}' does not support the option '${target.unknownFormatOption}'`);
  }
  if ('opened' in result) throw new InputImageError('instar: the guest opened the image for a resize without resizing it');
  if ('shrinkRefused' in result) {
    ctx.err(`${ctx.progname}: ${SHRINK_REFUSED}${ctx.progname}: ${SHRINK_WARNING}`);
    return 1;
  }
  if ('error' in result) {
    ctx.err(`${ctx.progname}: ${result.error}\n`);
    return 1;
  }
  if (reserveFailure !== undefined) {
    // qemu reserves the file's growth before the format's metadata; instar's guest has written
    // that already, so the image stays grown (its new clusters read as zeros) and the resize fails.
    ctx.err(`${ctx.progname}: ${result.format === 'raw' ? '' : 'Failed to resize underlying file: '}${reserveFailure}\n`);
    return 1;
  }
  if (!cmd.options.has('quiet')) ctx.out('Image resized.\n');
  return 0;
}

type Checked = { format: string } & ({ resized: true } | { opened: true } | { shrinkRefused: true } | { error: string });

/** The guest's answer is data: its shape and sizes are checked, its text made printable. */
function validResult(raw: unknown): Checked {
  const r = raw as Record<string, unknown> | null;
  const format = r?.format;
  if (typeof format !== 'string' || !/^[a-z0-9]{1,16}$/.test(format)) throw new InputImageError('instar: the guest answered resize with a malformed result');
  if (r!.resized === true) return { format, resized: true };
  if (r!.opened === true) return { format, opened: true };
  if (r!.shrinkRefused === true) return { format, shrinkRefused: true };
  if (typeof r!.error === 'string' && r!.error.length <= 4096) {
    // Newlines stay: qemu's bitmap errors have a second line.
    return { format, error: r!.error.replace(/[\x00-\x09\x0b-\x1f\x7f]/g, '?') };
  }
  throw new InputImageError('instar: the guest answered resize with a malformed result');
}

export const resize: Command = async (cmd, ctx) => {
  const args = parseArgs(cmd, ctx);
  if (typeof args === 'number') return args;
  try {
    return await runResize(cmd, args, ctx);
  } catch (e) {
    if (e instanceof InputImageError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
};
