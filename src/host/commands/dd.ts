// `dd`, the trusted half (raw output). qemu-img's order: --object, the operands one by one (the
// first bad one stops), both files named, the input opened (a guest answers its size), -O looked
// up, the sizes computed as qemu does (count caps the input's size before skip is taken from it),
// the output created (O_CREAT|O_TRUNC, sized to whole sectors as qemu's file driver does), then a
// second guest copies into it. The host removes the output when the copy fails if it created the
// file (no half-written file that looks finished; a file that was there, a device above all, is
// never removed) and flushes it on success (qemu's writeback cache flushes when it closes it).
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, statSync, unlinkSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { OpError } from '../sandbox/run.ts';
import { runWithReferencedFiles, ReferencedFileError, type InputFile } from '../open-files.ts';
import { InputImageError, foreignOptionMessage, keyOptions, imageTarget, openTop, referencedOpenMessage, type Target, guestFormat } from '../input-image.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';
import { strerror } from '../../strerror.ts';
import { INT64_MAX, INT_MAX, parseIntegerOption, parseSizeOption, type Parsed } from './qemu-numbers.ts';
import type { DdOptions } from '../../ops/dd.ts';
import { findDriver } from '../../formats/registry.ts';
import { isRawFile } from '../../formats/file/driver.ts';
import { ImageError, type CreatePlan } from '../../formats/types.ts';
import { lookupFormat, qemuFullVersion } from './create-options.ts';
import { randomBytes } from 'node:crypto';
import { LockConflict, openCreating } from '../image-locks.ts';
import { printErrorLines } from './error-lines.ts';

/** A failure worded as qemu-img words it: each line printed after "<progname>: ", exit status 1. */
class DdError extends InputImageError {}

/** One error_report whose text has line breaks: only its first line follows "<progname>: ". */
class DdErrorText extends DdError {}

interface Operands {
  bs: bigint;
  count?: bigint;
  skip?: bigint;
  input?: string;
  output?: string;
}

/** Formats qemu-img knows but cannot create. */
const NO_CREATION = new Set(['bochs', 'cloop', 'dmg']);

/** One operand's value, by qemu's parser for it in the profile. */
function operandValue(name: 'bs' | 'count' | 'skip', text: string, ctx: CommandContext): Parsed {
  if (name === 'bs') return parseSizeOption('bs', text, 1n, INT_MAX, ctx.profile);
  // 10.0 takes count and skip as plain integers; 7.2 as sizes (with suffixes).
  if (ctx.profile.newUsageErrors) return parseIntegerOption(name, text, 0n, INT64_MAX);
  return parseSizeOption(name, text, 0n, INT64_MAX, ctx.profile);
}

function parseOperands(args: readonly string[], ctx: CommandContext): Operands {
  const ops: Operands = { bs: 512n };
  for (const arg of args) {
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg : arg.slice(0, eq);
    const text = arg.slice(eq + 1);
    if (eq < 0 || !['bs', 'count', 'if', 'of', 'skip'].includes(name)) throw new DdError(`unrecognized operand ${name}`);
    if (name === 'if') ops.input = text;
    else if (name === 'of') ops.output = text;
    else {
      const r = operandValue(name as 'bs' | 'count' | 'skip', text, ctx);
      if ('error' in r) throw new DdError(r.error.join('\n'));
      if (r.warning) ctx.err(`${ctx.progname}: ${r.warning}\n`);
      if (name === 'bs') ops.bs = r.value;
      else if (name === 'count') ops.count = r.value;
      else ops.skip = r.value;
    }
  }
  return ops;
}

/** -O as qemu looks it up (after opening the input); undefined when instar can write it. */
function outputFormatRefusal(format: string, outPath: string): { now: string } | { atCreate: string } | undefined {
  if (isRawFile(format) || writesImage(format)) return undefined;
  if (NO_CREATION.has(format)) return { now: `Format driver '${format}' does not support image creation` };
  // dd gives a LUKS target no options, so qemu's creation fails for want of a key.
  if (format === 'luks') return { atCreate: `${outPath}: error while creating output image: Parameter 'key-secret' is required for cipher` };
  return { now: 'Unknown file format' };
}

/** Whether -O names a format instar creates and writes (its driver's `create` and `writer`). */
function writesImage(format: string): boolean {
  return format !== 'raw' && format !== 'file' && findDriver(format)?.writer !== undefined && findDriver(format)?.create !== undefined;
}

/** bdrv_create's plan for dd's new image: no options but the size; qemu's words when the format refuses it. */
function imagePlan(format: string, outName: string, length: bigint, ctx: CommandContext): CreatePlan {
  const found = lookupFormat(format, ctx.profile);
  if (!('capability' in found)) throw new DdError(`instar cannot write dd -O ${format} yet`);
  const env = { now: Math.floor(Date.now() / 1000), filename: outName, qemuVersion: qemuFullVersion(ctx.profile), randomBytes: (n: number) => randomBytes(n) };
  try {
    return found.capability.plan(new Map([['size', length.toString()]]), length, env);
  } catch (e) {
    if (e instanceof ImageError) throw new DdError(`${outName}: error while creating output image: ${e.message}`);
    throw e;
  }
}

/** A file's identity: device and inode. */
const fileId = (st: { dev: number; ino: number }) => `${st.dev}:${st.ino}`;

interface OpenedInput {
  format: string;
  size?: bigint;
  /** Every file the input's tree opened, by identity; the top image's first. */
  files: string[];
}

/** Protocols qemu's builds know besides 'file': instar writes none of them. */
const OTHER_PROTOCOLS = new Set(['host_device', 'host_cdrom', 'nbd', 'nbd+tcp', 'nbd+unix', 'ssh', 'http', 'https', 'ftp', 'ftps', 'iscsi',
  'iser', 'rbd', 'gluster', 'gluster+tcp', 'gluster+unix', 'gluster+rdma', 'nfs', 'blkdebug', 'blkverify', 'null-co', 'null-aio', 'vvfat', 'nvme']);

/**
 * The output's file name as qemu's bdrv_find_protocol reads it: a name with a ':' before any '/'
 * names a protocol ("file:x" is the file x); other protocols are refused, unknown ones as qemu does.
 */
function outputFile(name: string): string {
  const colon = name.search(/[:/]/);
  if (colon < 0 || name[colon] !== ':') return name;
  const protocol = name.slice(0, colon);
  if (protocol === 'file') return name.slice(colon + 1);
  if (OTHER_PROTOCOLS.has(protocol)) throw new DdError(`instar dd writes only local files, not '${protocol}:' targets`);
  throw new DdError(`Unknown protocol '${protocol}'`);
}

/** The input's size from the open guest: qemu's wording for each failure. */
async function openInput(input: InputFile, target: Target, options: DdOptions, ctx: CommandContext): Promise<OpenedInput> {
  let result: unknown;
  const files = [fileId(fstatSync(input.fd))];
  try {
    const onOpened = (_file: unknown, fd: number) => void files.push(fileId(fstatSync(fd)));
    result = await runWithReferencedFiles('dd', options as unknown as Record<string, unknown>, [input], ctx, [], { onOpened });
  } catch (e) {
    if (e instanceof ReferencedFileError) throw new DdError(referencedOpenMessage(e, target));
    if (e instanceof OpError) throw new DdError(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  }
  const r = (result ?? {}) as Record<string, unknown>;
  if (typeof r.format !== 'string' || !/^[a-z0-9]{1,16}$/.test(r.format)) throw new DdError('the guest gave a malformed answer');
  // An --image-opts option the format does not have: qemu names the (probed) format.
  const foreign = foreignOptionMessage(target, r.format);
  if (foreign !== undefined) throw new DdError(foreign);
  if (r.sizeFailed === true) return { format: r.format, files };
  if (typeof r.size === 'number' && Number.isSafeInteger(r.size) && r.size >= 0) return { format: r.format, size: BigInt(r.size), files };
  throw new DdError('the guest gave a malformed answer');
}

/**
 * qemu's image locking when the output is a file the input's tree has open: creating it needs the
 * write lock, which a format driver's reader holds against writers (qcow2 and the like) and raw
 * does not. So qemu truncates a raw input that is its own output (and copies its zeros), and
 * refuses otherwise. instar refuses every file below the top too, raw or not: a raw backing file
 * truncated under its overlay is never what was meant.
 */
function checkOutputNotInput(outName: string, outPath: string, opened: OpenedInput): void {
  let id: string;
  try {
    id = fileId(statSync(outPath));
  } catch {
    return;
  }
  const index = opened.files.indexOf(id);
  if (index < 0 || (index === 0 && opened.format === 'raw')) return;
  throw new DdErrorText(`${outName}: error while creating output image: Failed to get "write" lock\nIs another process using the image [${outPath}]?`);
}

/** What qemu copies: from `start` of the input, `length` bytes, and whether skip passes the end. */
function copyRange(size: bigint, ops: Operands): { start: bigint; length: bigint; skipPastEnd: boolean } {
  let end = size;
  // qemu caps the size by count from the input's start, before the skip (count counts from 0).
  if (ops.count !== undefined && ops.count <= INT64_MAX / ops.bs && ops.count * ops.bs < end) end = ops.count * ops.bs;
  if (ops.skip !== undefined && (ops.skip > INT64_MAX / ops.bs || end < ops.skip * ops.bs)) return { start: end, length: 0n, skipPastEnd: true };
  const start = (ops.skip ?? 0n) * ops.bs;
  return { start, length: end - start, skipPastEnd: false };
}

/** The output as opened: `created` when this command made the file (only then may a failure remove it). */
interface Output {
  fd: number;
  created: boolean;
  /** A regular file (a device is neither resized nor flushed). */
  regular: boolean;
}

/**
 * Creates the output as qemu's file driver does: truncated, sized up to whole sectors. O_EXCL
 * first, to know whether the file is this command's own: a file that was there (a device, or
 * the user's file) is never removed, whatever fails later.
 */
function createOutput(name: string, path: string, length: bigint): Output {
  const fail = (code: string, what: string) => new DdError(`${name}: error while creating output image: ${what}: ${strerror(code)}`);
  const flags = constants.O_WRONLY | constants.O_NOCTTY;
  let fd: number;
  let created = true;
  try {
    try {
      fd = openSync(path, flags | constants.O_CREAT | constants.O_EXCL, 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      created = false;
      // Truncated once qemu's locks are held (image-locks.ts): another process's image is refused first.
      fd = openCreating(path, flags | constants.O_TRUNC);
    }
  } catch (e) {
    if (e instanceof LockConflict) throw new DdErrorText(`${name}: error while creating output image: ${e.message}`);
    throw fail((e as NodeJS.ErrnoException).code ?? 'EIO', `Could not create '${path}'`);
  }
  const sectors = ((length + 511n) / 512n) * 512n;
  // A device is not resized: qemu's file driver refuses one smaller than the copy.
  const st = fstatSync(fd, { bigint: true });
  if (!st.isFile()) {
    if (st.size >= sectors) return { fd, created: false, regular: false };
    closeSync(fd);
    throw new DdError(`${name}: error while creating output image: Cannot grow device files`);
  }
  try {
    // Past 2^53 the file system refuses any length it would refuse this one for (EFBIG).
    ftruncateSync(fd, sectors > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(sectors));
  } catch (e) {
    closeSync(fd);
    // qemu leaves the file it made, empty.
    throw fail((e as NodeJS.ErrnoException).code ?? 'EIO', 'Could not resize file');
  }
  return { fd, created, regular: true };
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}

async function runDd(cmd: ParsedCommand, ctx: CommandContext): Promise<number> {
  // qemu creates each --object while it parses the options, before it looks at the operands.
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object' && !addObject(objects, value, ctx.err, ctx.progname)) return 1;
  }
  const ops = parseOperands(cmd.args, ctx);
  if (ops.input === undefined || ops.output === undefined) throw new DdError('Must specify both input and output files');
  const outName = ops.output;
  const target = imageTarget(ops.input, cmd.options.get('format')?.at(-1), cmd.options.has('image-opts'), true);
  const secrets = sourceSecrets(objects, [target]);
  const fd = openTop(target);
  try {
    const input: InputFile = { fd, path: target.path };
    const base: DdOptions = {
      phase: 'open',
      format: guestFormat(target.format),
      fileName: target.path,
      unsafeQuirks: ctx.globals.unsafeQuirks,
      profile: { vhdCurrentSize: ctx.profile.vhdCurrentSize },
      secrets,
      keyOptions: keyOptions([target]),
    };
    const opened = await openInput(input, target, base, ctx);
    const refusal = outputFormatRefusal(cmd.options.get('output-format')?.at(-1) ?? 'raw', outName);
    if (refusal && 'now' in refusal) throw new DdError(refusal.now);
    const outPath = outputFile(outName);
    if (opened.size === undefined) throw new DdError(`Failed to get size for '${ops.input}'`);
    const range = copyRange(opened.size, ops);
    if (refusal) throw new DdError(refusal.atCreate);
    checkOutputNotInput(outName, outPath, opened);
    const format = cmd.options.get('output-format')?.at(-1) ?? 'raw';
    const plan = writesImage(format) ? imagePlan(format, outName, range.length, ctx) : undefined;
    // A new image's layout sizes its own file (the guest truncates it): created empty here.
    const output = createOutput(outName, outPath, plan ? 0n : range.length);
    const outFd = output.fd;
    let ok = false;
    try {
      if (plan && !output.regular) throw new DdError(`instar writes ${format} images only into regular files, and '${outName}' is not one`);
      if (plan && (typeof plan.dataFile === 'string' || (plan.extentFiles?.length ?? 0) > 0)) throw new DdError(`instar cannot write a dd -O ${format} image of several files yet`);
      // qemu then opens what it created: a VMDK of no sectors (dd makes monolithicSparse) fails
      // its open. The file goes, as any output of a failed instar dd.
      if (format === 'vmdk' && range.length === 0n) throw new DdError(`Could not open '${outName}': Unsupported image type 'monolithicSparse'`);
      if (range.skipPastEnd) ctx.err(`${ctx.progname}: ${ops.input}: cannot skip to specified offset\n`);
      if (range.start + range.length > BigInt(Number.MAX_SAFE_INTEGER)) throw new DdError('instar cannot copy a disk of 8 PiB or more');
      if (range.length > 0n || plan) {
        const image = plan ? { image: { format, plan }, bs: Number(ops.bs) } : {};
        const options: DdOptions = { ...base, phase: 'copy', start: Number(range.start), length: Number(range.length), ...image };
        const outFile: InputFile = { fd: outFd, path: outPath, writable: true, role: 'output' };
        try {
          const done = (await runWithReferencedFiles('dd', options as unknown as Record<string, unknown>, [input, outFile], ctx)) as { failed?: unknown } | undefined;
          // A new image's layout that the file system refused (EFBIG, ENOSPC): qemu's bdrv_create failed.
          if (typeof done?.failed === 'string') throw new DdError(`${outName}: error while creating output image: Could not write '${outPath}': ${strerror(done.failed)}`);
        } catch (e) {
          if (e instanceof ReferencedFileError) throw new DdError(referencedOpenMessage(e, target));
          if (e instanceof OpError) throw new DdError(e.message);
          throw e;
        }
      }
      // The guest cannot fsync (its permission model refuses it); qemu flushes when it closes.
      if (output.regular) fsyncSync(outFd);
      ok = true;
    } finally {
      closeSync(outFd);
      if (!ok && output.created) unlinkQuietly(outPath);
    }
  } finally {
    closeSync(fd);
  }
  return 0;
}

export const dd: Command = async (cmd, ctx) => {
  try {
    return await runDd(cmd, ctx);
  } catch (e) {
    if (e instanceof DdErrorText) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      return 1;
    }
    if (e instanceof InputImageError) {
      printErrorLines(ctx, e.message);
      return 1;
    }
    throw e;
  }
};
