// `convert -O <format>` for formats other than raw, the trusted half. After the sources are
// opened (the command's open phase), qemu-img's steps in its order: the output driver, its -o
// options (with the size set to the disk's and -B as backing_file), the backing and compression
// checks, bdrv_create ("<target>: error while converting <fmt>: ..."); then the host creates the
// image's files (and data file, extents) and a guest lays the image out and copies the disk into
// it through the format's writer. The host flushes as -t says and removes every file it created
// when anything fails.
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, statSync, unlinkSync } from 'node:fs';
import { fileId, openReferenced, startChain, PathRefusedError, ReferenceOpenError } from '../paths/resolve.ts';
import { randomBytes } from 'node:crypto';
import { parseSecretObjects } from '../secrets.ts';
import type { CommandContext } from '../commands/types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { ConvertError, ConvertErrorText, ConvertQuietFailure } from './errors.ts';
import { CACHE_MODES } from './early-plan.ts';
import { hasHelpOption, lookupFormat, parseSetOptions, qemuFullVersion, typesOf } from '../commands/create-options.ts';
import { isValidOptionList, OptionListError } from '../commands/measure-options.ts';
import { optionHelp, type SetOption } from '../../output/create-text.ts';
import { findDriver } from '../../formats/registry.ts';
import { ImageError, type CreateEnvironment, type CreatePlan } from '../../formats/types.ts';
import { runWithReferencedFiles, ReferencedFileError, type InputFile } from '../open-files.ts';
import { OpError } from '../sandbox/run.ts';
import { strerror } from '../../strerror.ts';
import { MalformedRange, PreallocationFailure, preallocationWriteFailure, reserveNamedRange } from '../preallocate.ts';
import type { ProgressPrinter } from '../../output/progress.ts';
import type { ConvertOptions } from '../../ops/convert.ts';
import type { ConvertImageOptions, ConvertImageResult } from '../../ops/convert/to-image.ts';
import type { Target } from '../input-image.ts';
import { isBlockStatusFailure, referencedFailure } from './open-copy.ts';
import { CreateFailure, probeBacking } from '../commands/create-backing.ts';
import { convertIntoImage } from './to-image-into.ts';
import { bitmapsFailAfterCopy, bitmapsStopAtCreate, bitmapWarnings, checkSourceBitmaps, failedBitmap, refuseUnsupportedBitmaps, wantsBitmaps } from './to-image-bitmaps.ts';
import { blockNodeName } from '../../output/node-name.ts';
import { intoTarget } from './into-target.ts';
import { COMPRESSING_FORMATS } from '../../formats/compressing.ts';
import { LockConflict, lockCreatedTarget, openCreating } from '../image-locks.ts';

/** What the command's settings give this path. */
export interface ImageSettings {
  sparse: number;
  noCreate: boolean;
  targetIsZero: boolean;
  outputFormat: string;
  outputCache: string;
}

/** What the command's open phase answered (convert.ts openPhase). */
export interface OpenedSources {
  sizes: bigint[];
  blockStatus?: string;
  unsized: boolean;
  nothingToCopy: boolean;
}

export interface ImageJob {
  cmd: ParsedCommand;
  ctx: CommandContext;
  s: ImageSettings;
  printer: ProgressPrinter | undefined;
  inputs: InputFile[];
  targets: Target[];
  options: ConvertOptions;
  /** The command's open phase; `read` gets the identity of every file the sources opened. */
  open: (read: string[]) => Promise<OpenedSources>;
}

/** The -o lists as qemu-img convert's getopt loop accumulates them (accumulate_options). */
export function optionText(cmd: ParsedCommand): string | undefined {
  let text: string | undefined;
  for (const [key, value] of cmd.sequence ?? []) {
    if (key !== 'options') continue;
    if (!isValidOptionList(value)) throw new ConvertError(`Invalid option list: ${value}`);
    text = text === undefined ? value : `${text},${value}`;
  }
  return text;
}

/**
 * -o help (checked right after the getopt loop, before any source is opened): the format's
 * options and the file protocol's, as create prints them; undefined when not asked.
 */
export function imageOptionHelp(cmd: ParsedCommand, ctx: CommandContext, format: string): number | undefined {
  const text = optionText(cmd);
  if (!hasHelpOption(text)) return undefined;
  const found = lookupFormat(format, ctx.profile);
  if ('error' in found) throw new ConvertError(found.error === 'unknown' ? `Unknown file format '${format}'` : `Format driver '${format}' does not support image creation`);
  if (!('capability' in found)) throw new ConvertError(`instar cannot list the create options of ${format} images yet`);
  const withFile = cmd.args.length >= 2;
  ctx.out(optionHelp(withFile ? found.specs : found.capability.options, format, withFile));
  return 0;
}

const sectorAligned = (n: bigint) => ((n + 511n) / 512n) * 512n;

/** The create plan, after qemu-img convert's checks in its order; ConvertError with qemu's words. */
async function planImage(job: ImageJob, total: bigint): Promise<{ plan: CreatePlan; set: Map<string, SetOption> }> {
  const { cmd, ctx, s } = job;
  const fmt = s.outputFormat;
  const outPath = cmd.args[cmd.args.length - 1];
  const found = lookupFormat(fmt, ctx.profile);
  if ('error' in found) throw new ConvertError(found.error === 'unknown' ? `Unknown file format '${fmt}'` : `Format driver '${fmt}' does not support image creation`);
  const types = 'capability' in found ? typesOf(found.specs) : found.types;
  let set: Map<string, SetOption>;
  try {
    set = parseSetOptions(optionText(cmd), types, ctx.profile.newUsageErrors);
  } catch (e) {
    if (!(e instanceof OptionListError)) throw e;
    const [first, ...rest] = e.lines;
    throw new ConvertErrorText(`${first.text}\n${rest.map((l) => l.text).join('\n')}`.replace(/\n$/, ''));
  }
  const sized = BigInt.asUintN(64, total).toString();
  set.set('size', { value: sized, text: sized });
  // add_old_style_options: -B and -F into the option list.
  const baseImage = cmd.options.get('backing')?.at(-1);
  const baseFormat = cmd.options.get('backing-format')?.at(-1);
  if (baseImage !== undefined) {
    if (!Object.hasOwn(types, 'backing_file')) throw new ConvertError(`Backing file not supported for file format '${fmt}'`);
    set.set('backing_file', { value: baseImage, text: baseImage });
  }
  if (baseFormat !== undefined) {
    if (!Object.hasOwn(types, 'backing_fmt')) throw new ConvertError(`Backing file format not supported for file format '${fmt}'`);
    set.set('backing_fmt', { value: baseFormat, text: baseFormat });
  }
  const backing = set.get('backing_file')?.value;
  if (backing !== undefined && job.targets.length > 1) {
    throw new ConvertError('Having a backing file for the target makes no sense when concatenating multiple input images');
  }
  if (backing !== undefined && !set.has('backing_fmt')) throw new ConvertError('Use of backing file requires explicit backing format');
  if (cmd.options.has('compress')) {
    if (!COMPRESSING_FORMATS.has(fmt)) throw new ConvertError('Compression not supported for this file format');
    if (set.get('encryption')?.value === 'on' || set.has('encrypt.format')) throw new ConvertError('Compression and encryption not supported at the same time');
    const prealloc = set.get('preallocation')?.value;
    if (prealloc !== undefined && prealloc !== 'off') throw new ConvertError('Compression and preallocation not supported at the same time');
  }
  if (cmd.options.has('bitmaps')) {
    if (job.targets.length > 1) throw new ConvertError('Copying bitmaps only possible with single source');
    await checkSourceBitmaps(job);
  }
  if (!('capability' in found) || (!findDriver(fmt)?.writer && !bitmapsStopAtCreate(cmd, fmt, ctx.profile))) {
    throw new ConvertError(`convert -O ${fmt} is not implemented yet in instar (no ${fmt} writer); nothing was written`);
  }
  const normalized = new Map([...set].map(([k, v]) => [k, v.value]));
  const env: CreateEnvironment = { now: Math.floor(Date.now() / 1000), filename: outPath, qemuVersion: qemuFullVersion(ctx.profile), randomBytes: (n: number) => randomBytes(n) };
  // A LUKS target takes its passphrase from --object (key-secret), as create does.
  env.secrets = parseSecretObjects(cmd.options.get('object') ?? []);
  try {
    // The VMDK driver opens its backing file alone to record its CID, after its option checks.
    if (fmt === 'vmdk' && backing !== undefined && normalized.get('subformat')?.endsWith('Flat') !== true) {
      found.capability.plan(normalized, BigInt.asUintN(64, total), { ...env, parentCid: 0 });
      const parent = await probeBacking(outPath, backing, undefined, ctx, true);
      if (parent.format !== 'vmdk') throw new ImageError(`Invalid backing file format: ${parent.format}. Must be vmdk`);
      env.parentCid = parent.cid;
    }
    return { plan: found.capability.plan(normalized, BigInt.asUintN(64, total), env), set };
  } catch (e) {
    if (e instanceof ImageError || e instanceof CreateFailure) throw new ConvertError(`${outPath}: error while converting ${fmt}: ${e.message}`);
    throw e;
  }
}

interface CreatedFile {
  path: string;
  fd: number;
}

/**
 * Creates (or truncates, as qemu does) one file of the new image; qemu's words when it cannot. The
 * create's locks then give way to those qemu's open of the new image holds while it is written
 * (`dataChild`: a data file or a flat extent), as the guest both creates and writes it.
 */
function createFile(path: string, job: ImageJob, made: CreatedFile[], dataChild = false): number {
  const outPath = job.cmd.args[job.cmd.args.length - 1];
  // O_NONBLOCK: a FIFO must not hang the open; anything but a regular file is refused below.
  const flags = constants.O_CREAT | constants.O_TRUNC | constants.O_RDWR | constants.O_NONBLOCK | constants.O_NOCTTY;
  let fd: number;
  try {
    fd = openCreating(path, flags);
  } catch (e) {
    // Another process has the file open (qemu's lock bytes): refused before anything is truncated.
    if (e instanceof LockConflict) throw new ConvertErrorText(`${outPath}: error while converting ${job.s.outputFormat}: ${e.message}`);
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new ConvertError(`${outPath}: error while converting ${job.s.outputFormat}: Could not create '${path}': ${strerror(code)}`);
  }
  made.push({ path, fd });
  if (!fstatSync(fd).isFile()) throw new ConvertError(`instar writes images only into regular files, and '${path}' is not one`);
  lockCreatedTarget(fd, path, false, dataChild);
  return fd;
}

function reserveTarget(fd: number, range: unknown, wording: string): void {
  try {
    reserveNamedRange(fd, range);
  } catch (e) {
    if (e instanceof MalformedRange) throw new ConvertError('the guest gave a malformed answer');
    if (e instanceof PreallocationFailure) throw new ConvertError(wording + e.message);
    throw e;
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}

/**
 * qemu's image locking: a file the sources have open cannot be created over (its write lock is
 * taken), so a target naming a source, a backing file or a data file of one is refused before
 * anything is truncated.
 */
function checkNotRead(plan: CreatePlan, outPath: string, read: readonly string[], job: ImageJob): void {
  const paths = [outPath, ...(typeof plan.dataFile === 'string' ? [plan.dataFile] : []), ...(plan.extentFiles ?? [])];
  for (const path of paths) {
    let id: string;
    try {
      id = fileId(statSync(path, { bigint: true }));
    } catch {
      continue;
    }
    if (read.includes(id)) {
      throw new ConvertErrorText(`${outPath}: error while converting ${job.s.outputFormat}: Failed to get "write" lock\nIs another process using the image [${path}]?`);
    }
  }
}

/** The target's backing file opened as qemu opens it with the new image: its virtual size, or qemu's message. */
async function backingSize(outPath: string, backing: string, format: string | undefined, ctx: CommandContext): Promise<{ size: number }> {
  try {
    const probed = await probeBacking(outPath, backing, format, ctx, false, true);
    if (probed.sizeErrno !== undefined) throw new ConvertError(`Could not open '${outPath}': Could not get the size of the backing file`);
    return { size: probed.virtualSize };
  } catch (e) {
    if (e instanceof CreateFailure) throw new ConvertError(`Could not open '${outPath}': Could not open backing file: ${e.message}`);
    throw e;
  }
}

/**
 * -n --bitmaps into a format without persistent bitmaps: qemu checks the sources' bitmaps, opens
 * the target and refuses it before anything is written (a qcow2 target is refused after this).
 */
async function bitmapsIntoExisting(job: ImageJob): Promise<void> {
  const target = intoTarget(job.cmd);
  if (target.format === 'qcow2' && target.failure === undefined) {
    // qemu checks the sources' bitmaps before it opens the target; the guest adds them after the copy.
    const opened = await job.open([]);
    if (opened.blockStatus !== undefined || opened.nothingToCopy) return;
    if (job.targets.length > 1) throw new ConvertError('Copying bitmaps only possible with single source');
    return checkSourceBitmaps(job);
  }
  if (target.format === undefined || target.failure !== undefined || findDriver(target.format)?.dirtyBitmaps) return;
  // qemu 10.0's parallels driver takes bitmaps (its own extension), which instar does not write:
  // refused as before under profiles past 7.2.
  if (target.format === 'parallels' && job.ctx.profile.major > 7) return;
  const opened = await job.open([]);
  if (opened.blockStatus !== undefined || opened.nothingToCopy) {
    throw new ConvertError(opened.blockStatus ?? 'instar cannot convert sources whose sizes add up past 2^63 bytes');
  }
  if (job.targets.length > 1) throw new ConvertError('Copying bitmaps only possible with single source');
  await checkSourceBitmaps(job);
  try {
    closeSync(openSync(target.path, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK));
  } catch (e) {
    throw new ConvertError(`Could not open '${target.errorName}': Could not open '${target.path}': ${strerror((e as NodeJS.ErrnoException).code ?? 'EIO')}`);
  }
  throw new ConvertError(`Format driver '${target.format}' does not support bitmaps`);
}

/** The whole -O path after the command's settings; throws ConvertError with qemu's words. */
export async function convertToImage(job: ImageJob): Promise<void> {
  const { cmd, ctx, s } = job;
  if (s.noCreate && wantsBitmaps(cmd)) await bitmapsIntoExisting(job);
  refuseUnsupportedBitmaps(cmd, s.noCreate && intoTarget(cmd).format !== 'qcow2');
  if (s.noCreate) return convertIntoImage(job);
  const read: string[] = [];
  const opened = await job.open(read);
  if (opened.blockStatus !== undefined || opened.nothingToCopy) {
    throw new ConvertError(opened.blockStatus ?? 'instar cannot convert sources whose sizes add up past 2^63 bytes');
  }
  const total = opened.sizes.reduce((a, b) => a + sectorAligned(b), 0n);
  const { plan, set } = await planImage(job, total);
  const outPath = cmd.args[cmd.args.length - 1];
  const backing = set.get('backing_file')?.value;
  // qemu opens the new image with its backing file, whose size decides which zeros are written.
  const backingFormat = set.get('backing_fmt')?.value;
  const probed = backing === undefined ? undefined : await backingSize(outPath, backing, backingFormat, ctx);
  checkNotRead(plan, outPath, read, job);
  const made: CreatedFile[] = [];
  let ok = false;
  let backingInput: InputFile | undefined;
  try {
    // The guest reads the target's backing file where qemu's copy-on-write would (clusters the copy covers in part).
    if (backing !== undefined) {
      try {
        const opened = openReferenced(backing, outPath, 'backing', ctx.policy, startChain(outPath));
        backingInput = { fd: opened.fd, path: opened.path };
      } catch (e) {
        if (e instanceof PathRefusedError || e instanceof ReferenceOpenError) throw new ConvertError(`Could not open '${outPath}': Could not open backing file: ${e.reason}`);
        throw e;
      }
    }
    const targetBacking = probed && backingInput ? { size: probed.size, index: job.inputs.length, format: backingFormat, fileName: backingInput.path } : undefined;
    const outputs: InputFile[] = [{ fd: createFile(outPath, job, made), path: outPath, writable: true, role: 'output' }];
    if (typeof plan.dataFile === 'string') outputs.push({ fd: createFile(plan.dataFile, job, made, true), path: plan.dataFile, writable: true, role: 'output' });
    // A flat extent is its VMDK's data child; a sparse one is an image of its own.
    const flat = typeof plan.subformat === 'string' && plan.subformat.endsWith('Flat');
    for (const path of plan.extentFiles ?? []) outputs.push({ fd: createFile(path, job, made, flat), path, writable: true, role: 'output' });
    const badCache = !CACHE_MODES.has(s.outputCache);
    const noBitmaps = bitmapsStopAtCreate(cmd, s.outputFormat, ctx.profile);
    const options: ConvertImageOptions = {
      format: s.outputFormat,
      plan,
      sources: job.options.sources,
      snapshot: job.options.snapshot,
      unsafeQuirks: job.options.unsafeQuirks,
      profile: job.options.profile,
      secrets: job.options.secrets,
      sparseSize: s.sparse,
      compressed: cmd.options.has('compress'),
      progress: !!job.printer,
      layoutOnly: badCache || noBitmaps,
      targetBacking,
      bitmaps: wantsBitmaps(cmd),
      bitmapsFailAfterCopy: wantsBitmaps(cmd) && bitmapsFailAfterCopy(s.outputFormat, ctx.profile),
      salvage: job.options.salvage,
      copyRange: job.options.copyRange,
    };
    const run = { ...ctx.run, onProgress: (done: number, total: number) => (done > 0 ? job.printer?.show((100 * done) / total) : undefined) };
    let result: ConvertImageResult;
    const inputs = [...job.inputs, ...(backingInput ? [backingInput] : []), ...outputs];
    try {
      result = (await runWithReferencedFiles('convert-image', options as unknown as Record<string, unknown>, inputs, { ...ctx, run })) as ConvertImageResult;
    } catch (e) {
      if (e instanceof ReferencedFileError) throw referencedFailure(e, job.targets);
      if (isBlockStatusFailure(e)) {
        // qemu's walk of the sources fails before it writes anything: its new image stays as
        // created. The files again as the layout alone makes them (its lines are printed already).
        for (const f of made) ftruncateSync(f.fd, 0);
        await runWithReferencedFiles('convert-image', { ...options, layoutOnly: true } as unknown as Record<string, unknown>, inputs, { ...ctx, run });
        ok = true;
        throw new ConvertError(e.message);
      }
      if (e instanceof OpError) throw new ConvertError(e.message);
      throw e;
    }
    if (typeof result !== 'object' || result === null) throw new ConvertError('the guest gave a malformed answer');
    if ('failed' in result && !/^E[A-Z0-9]{1,15}$/.test(String(result.failed))) throw new ConvertError('the guest gave a malformed answer');
    if ('failed' in result) {
      const code = String(result.failed);
      throw new ConvertError(`${outPath}: error while converting ${s.outputFormat}: ${preallocationWriteFailure(s.outputFormat, plan, code) ?? `Could not write '${outPath}': ${strerror(code)}`}`);
    }
    // preallocation=falloc: what the guest left as holes the host reserves, as qemu's create does.
    if ('reserve' in result) reserveTarget(outputs[0].fd, result.reserve, `${outPath}: error while converting ${s.outputFormat}: Could not resize image: Failed to resize underlying file: `);
    if ('quietFailure' in result) {
      // qemu closes the image whole (flushed as -t says) and exits 1 without a word.
      if (s.outputCache !== 'unsafe') for (const f of made) fsyncSync(f.fd);
      ok = true;
      throw new ConvertQuietFailure();
    }
    if ('openFailed' in result && typeof result.openFailed === 'string') {
      // qemu's open of the image it just created fails: the image stays, as created.
      ok = true;
      throw new ConvertError(`Could not open '${outPath}': ${result.openFailed}`);
    }
    if ('noClusterSize' in result) {
      // qemu finds this once the new image is open, before it copies: the image stays, as created.
      ok = true;
      throw new ConvertError('invalid cluster size');
    }
    if ('bitmapsUnsupported' in result || (noBitmaps && !badCache)) {
      // qemu finds this once the new image is open: the image stays, as created.
      ok = true;
      throw new ConvertError(`Format driver '${s.outputFormat}' does not support bitmaps`);
    }
    const warnings = bitmapWarnings(result as Record<string, unknown>);
    if (badCache) {
      // qemu parses -t after creating the target, which then stays as created.
      ok = true;
      throw new ConvertError(`Invalid cache option: ${s.outputCache}`);
    }
    if (s.outputCache !== 'unsafe') for (const f of made) fsyncSync(f.fd);
    for (const line of warnings) ctx.err(`${ctx.progname}: ${line}\n`);
    ok = true;
    // The disk copied, the first bitmap qemu tried to create failed: the image stays, status 1.
    const failed = failedBitmap(result as Record<string, unknown>);
    if (failed !== undefined) throw new ConvertError(`Failed to create bitmap ${failed}: Can't store persistent bitmaps to ${blockNodeName()}: Operation not supported`);
  } finally {
    if (backingInput) closeSync(backingInput.fd);
    for (const f of made) {
      closeSync(f.fd);
      if (!ok) unlinkQuietly(f.path);
    }
  }
}
