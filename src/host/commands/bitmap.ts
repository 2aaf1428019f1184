// `bitmap`: the trusted half. Checks qemu-img's options in its order, opens the image read-write
// with O_DSYNC (qemu's BDRV_O_RDWR open) and the -b source read-only, lets a guest plan and apply
// the changes to the persistent dirty bitmaps, fsyncs the image after the guest exits and prints
// qemu's message for an action that failed.
import { closeSync, fstatSync, fsyncSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { checkFormat, imageTarget, InputImageError, openTop, topTarget, type Target, guestFormat } from '../input-image.ts';
import { openReferenced } from '../paths/resolve.ts';
import { PathRefusedError, ReferenceOpenError } from '../paths/policy.ts';
import { resolve } from 'node:path';
import { openWritable, PROBED_RAW_WARNING, runRepairingDirty } from '../writable-image.ts';
import { ReferencedFileError, type InputFile } from '../open-files.ts';
import { OpError } from '../sandbox/run.ts';
import { referencedOpenMessage } from '../input-image.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { INT64_MAX, parseSizeOption } from './qemu-numbers.ts';
import type { BitmapActionKind, BitmapActionSpec } from '../../formats/qcow2/bitmap-actions.ts';
import type { BitmapOptions } from '../../ops/bitmap.ts';
import { blockNodeName } from '../../output/node-name.ts';
import { LockConflict, lockForReading } from '../image-locks.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

const ACTIONS = new Set<string>(['add', 'remove', 'clear', 'enable', 'disable', 'merge']);

interface BitmapArgs {
  actions: BitmapActionSpec[];
  granularity: bigint;
  sourceFile?: string;
  sourceFormat?: string;
}

/** img_bitmap's option loop and checks, in its order; a number is the exit status. */
function parseArgs(cmd: ParsedCommand, ctx: CommandContext): BitmapArgs | number {
  const fail = (lines: string[]) => {
    for (const line of lines) ctx.err(`${ctx.progname}: ${line}\n`);
    return 1;
  };
  const args: BitmapArgs = { actions: [], granularity: 0n };
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object' && !addObject(objects, value, ctx.err, ctx.progname)) return 1;
    if (key === 'granularity') {
      const parsed = parseSizeOption('granularity', value, 0n, INT64_MAX, ctx.profile);
      if ('error' in parsed) return fail(parsed.error);
      if (parsed.warning) ctx.err(`${ctx.progname}: ${parsed.warning}\n`);
      args.granularity = parsed.value;
    }
    if (key === 'source-file') args.sourceFile = value;
    if (key === 'source-format') args.sourceFormat = value;
    if (ACTIONS.has(key)) args.actions.push(key === 'merge' ? { kind: 'merge', source: value } : { kind: key as BitmapActionKind });
  }
  const has = (kind: string) => args.actions.some((a) => a.kind === kind);
  if (args.actions.length === 0) return fail(['Need at least one of --add, --remove, --clear, --enable, --disable, or --merge']);
  if (args.granularity !== 0n && !has('add')) return fail(['granularity only supported with --add']);
  if (args.sourceFormat !== undefined && args.sourceFile === undefined) return fail(['-F only supported with -b']);
  if (args.sourceFile !== undefined && !has('merge')) return fail(['Merge bitmap source file only supported with --merge']);
  if (cmd.args.length !== 2) return fail(['Expecting filename and bitmap name']);
  return args;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The guest's answer, checked: a failed action's line must be qemu-img's for one of ours. */
function validAnswer(raw: unknown, name: string): { format: string; error?: string; refused?: string; sourceError?: string } {
  const bad = () => new OpError('the guest answered bitmap with a malformed result');
  if (!isObject(raw) || typeof raw.format !== 'string' || raw.format.length > 64) throw bad();
  if (raw.done === true) return { format: raw.format };
  const sourceError = raw['source-error'];
  if (typeof sourceError === 'string' && sourceError.length <= 4096) return { format: raw.format, sourceError };
  if (typeof raw.refused === 'string' && raw.refused.length <= 4096) return { format: raw.format, refused: raw.refused };
  const error = raw.error;
  if (typeof error !== 'string' || error.length > 8192 + 4 * name.length) throw bad();
  if (![...ACTIONS].some((kind) => error.startsWith(`Operation ${kind} on bitmap ${name} failed: `))) throw bad();
  return { format: raw.format, error };
}

/**
 * The -b source: an untrusted file, opened read-only through the path policy (by default inside
 * the image's directory tree), or qemu's reason it could not be opened (printed after the image
 * is closed, as qemu closes it only then).
 */
function openSource(args: BitmapArgs, target: Target, imageFd: number, ctx: CommandContext): { fd?: number; target?: Target; error?: string; refused?: string } {
  if (args.sourceFile === undefined) return {};
  const source = imageTarget(args.sourceFile, args.sourceFormat, false);
  let fd: number;
  try {
    checkFormat(source);
    // qemu opens the name as given (relative to the cwd), not relative to the image.
    const chain = { visited: new Set<string>(), depth: 0, top: target.path };
    fd = openReferenced(resolve(args.sourceFile), target.path, 'backing', ctx.policy, chain).fd;
    lockForReading(fd, source.path, source.format);
  } catch (e) {
    if (e instanceof LockConflict) return { error: `Could not open '${source.errorName}': ${e.message}` };
    // instar's refusal, not qemu's: nothing is written, the image is not even opened by a guest.
    if (e instanceof PathRefusedError) return { refused: `Could not open '${source.errorName}': ${e.reason}` };
    if (!(e instanceof ReferenceOpenError)) {
      if (e instanceof InputImageError) return { error: e.message };
      throw e;
    }
    // A missing or unreadable file: qemu's own words, from opening it as qemu-img would.
    try {
      closeSync(openTop(source));
    } catch (open) {
      if (open instanceof InputImageError) return { error: open.message };
      throw open;
    }
    return { error: `Could not open '${source.errorName}': ${e.reason}` };
  }
  const a = fstatSync(fd);
  const b = fstatSync(imageFd);
  if (a.dev === b.dev && a.ino === b.ino) {
    closeSync(fd);
    // qemu's image locking: the image itself is held for writing.
    return { error: `Could not open '${source.errorName}': Failed to get shared "write" lock\nIs another process using the image [${source.errorName}]?` };
  }
  return { fd, target: source };
}

async function runBitmap(cmd: ParsedCommand, args: BitmapArgs, ctx: CommandContext): Promise<number> {
  const target = topTarget(cmd, cmd.args[0]);
  const fd = openWritable(cmd, target);
  const inputs: InputFile[] = [{ fd, path: target.path, writable: true }];
  let source: ReturnType<typeof openSource> = {};
  let answer: ReturnType<typeof validAnswer>;
  try {
    source = openSource(args, target, fd, ctx);
    if (source.refused !== undefined) throw new InputImageError(source.refused);
    // The image is open (and closed) even when the source is not: qemu stores its bitmaps again.
    const actions = source.error === undefined ? args.actions : [];
    if (source.fd !== undefined && source.target) inputs.push({ fd: source.fd, path: source.target.path });
    const options: BitmapOptions = {
      format: guestFormat(target.format),
      unsafeQuirks: ctx.globals.unsafeQuirks,
      fileName: target.path,
      profile: ctx.profile,
      secrets: sourceSecrets(cmd.options.get('object') ?? [], source.target ? [target, source.target] : [target]),
      name: cmd.args[1],
      actions,
      // qemu hands -g on as a uint32; 0 means none was given.
      granularity: args.granularity === 0n ? undefined : Number(BigInt.asUintN(32, args.granularity)),
      nodeName: blockNodeName(),
      // qemu-img opens the source without its backing file (BDRV_O_NO_BACKING).
      source: source.target ? { format: guestFormat(source.target.format), fileName: source.target.path, profile: ctx.profile, unsafeQuirks: ctx.globals.unsafeQuirks, noBacking: true } : undefined,
    };
    try {
      answer = validAnswer(await runRepairingDirty('bitmap', options, inputs, ctx, target), cmd.args[1]);
    } catch (e) {
      if (e instanceof ReferencedFileError) throw new InputImageError(referencedOpenMessage(e, target));
      if (e instanceof OpError) throw new InputImageError(`Could not open '${target.errorName}': ${e.message}`);
      throw e;
    }
  } finally {
    fsyncSync(fd);
    for (const input of inputs) closeSync(input.fd);
  }
  if (target.format === undefined && answer.format === 'raw') ctx.err(PROBED_RAW_WARNING(target.path));
  const sourceError = answer.sourceError === undefined ? undefined : `Could not open '${source.target?.errorName ?? ''}': ${answer.sourceError}`;
  const line = answer.refused ?? answer.error ?? source.error ?? sourceError;
  if (line === undefined) return 0;
  ctx.err(`${ctx.progname}: ${line}\n`);
  return 1;
}

export const bitmap: Command = async (cmd, ctx) => {
  const args = parseArgs(cmd, ctx);
  if (typeof args === 'number') return args;
  try {
    return await runBitmap(cmd, args, ctx);
  } catch (e) {
    if (e instanceof InputImageError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
};
