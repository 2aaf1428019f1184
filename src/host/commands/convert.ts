// `convert`, the trusted half (raw target). Order as in qemu-img: options, sources opened
// read-only, the -l snapshot, the target format, then the target created (O_CREAT|O_TRUNC) or,
// with -n, opened as it is; the guest copies into it; the host truncates, flushes as -t says
// (qemu's default 'unsafe' does not), and removes a target it created when anything fails (no
// half-written file that looks finished). A new target may already exist, made by the CLI's
// early start with the copy guests booting (src/cli/early-start.ts): createFreshTarget takes it,
// and one this command does not take is removed before the target's name is used again.
import { closeSync, constants, fsyncSync, openSync, statSync, unlinkSync } from 'node:fs';
import { ConvertError, ConvertErrorText, ConvertQuietFailure, ConvertStopsWithSuccess } from '../convert/errors.ts';
import { checkOpenAnswer, splittableSparse, isBlockStatusFailure, openAndCopy, parseSizes, progressSum, referencedFailure, resetTarget, safeSizes, TargetLeft, TwoRoundsNeeded } from '../convert/open-copy.ts';
import { createTarget, targetTooSmall } from '../convert/create-target.ts';
import { copyGuestCount, createFreshTarget, removeEarlyTarget } from '../convert/fresh-target.ts';
import { CACHE_MODES } from '../convert/early-plan.ts';
import { workerRange } from '../../ops/convert/split.ts';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { isDriverName } from '../../formats/names.ts';
import { fdFileId, punchTarget } from '../punch-holes.ts';
import { PreallocationFailure, reserveBlocks, writeZeros } from '../preallocate.ts';
import { OpError } from '../sandbox/run.ts';
import { runWithReferencedFiles, ReferencedFileError, type InputFile } from '../open-files.ts';
import { InputImageError, imageTarget, openTop, type Target } from '../input-image.ts';
import { strerror } from '../../strerror.ts';
import { INT64_MAX, parseCInteger, parseIntegerOption, parseSizeOption } from './qemu-numbers.ts';
import { parseSnapshotParam } from './image-opts.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { ProgressPrinter } from '../../output/progress.ts';
import type { ConvertOpenResult, ConvertOptions } from '../../ops/convert.ts';
import type { SnapshotChoice } from '../../ops/convert/sources.ts';
import { convertToImage, imageOptionHelp, optionText } from '../convert/to-image.ts';
import { lookupFormat, parseSetOptions, typesOf } from './create-options.ts';
import { isValidOptionList, OptionListError } from './measure-options.ts';
import { PREALLOC_MODES } from '../../formats/raw/create.ts';
import { isRawFile } from '../../formats/file/driver.ts';
import type { SetOption } from '../../output/create-text.ts';
import { checkZeroInitWithBacking, intoTarget } from '../convert/into-target.ts';
import { printErrorLines } from './error-lines.ts';
import { lockIntoTarget } from '../convert/to-image-into.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

const MAX_SPARSE = 16 * 1024 * 1024;

/** -S as both versions check it inside their getopt loops: cvtnum (hex, signs and suffixes as qemu_strtosz takes them), then whole sectors. */
function sparseSize(text: string, ctx: CommandContext): number {
  const r = parseSizeOption('buffer size for sparse output', text, 0n, INT64_MAX, ctx.profile);
  if ('error' in r) throw new ConvertError(r.error.join('\n'));
  if (r.warning) ctx.err(`${ctx.progname}: ${r.warning}\n`);
  const v = Number(r.value);
  if (v % 512 !== 0 || v > MAX_SPARSE) {
    throw new ConvertError(`Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to ${MAX_SPARSE}. ` +
      'Select 0 to disable sparse detection (fully allocates output).');
  }
  return v;
}

/** -r, checked as it comes (instar copies unthrottled: a limit only slows qemu down). */
function rateLimit(text: string, ctx: CommandContext): void {
  const r = parseSizeOption('rate limit', text, 0n, INT64_MAX, ctx.profile);
  if ('error' in r) throw new ConvertError(r.error.join('\n'));
  if (r.warning) ctx.err(`${ctx.progname}: ${r.warning}\n`);
}

/** qemu-img's MAX_COROUTINES, the bound of -m. */
const MAX_COROUTINES = 16;

/** -m, as both versions check it inside their getopt loops: a C integer of base 0 (0x hex, leading-0 octal), 1 to 16. */
function coroutineCount(text: string, ctx: CommandContext): number {
  const max = BigInt(MAX_COROUTINES);
  if (!ctx.profile.newUsageErrors) {
    const n = parseCInteger(text);
    if (n === 'invalid' || n < 1n || n > max) throw new ConvertError(`Invalid number of coroutines. Allowed number of coroutines is between 1 and ${MAX_COROUTINES}`);
    return Number(n);
  }
  const r = parseIntegerOption('number of coroutines', text, 1n, max);
  if ('error' in r) throw new ConvertError(r.error.join('\n'));
  return Number(r.value);
}

/** -l, with qemu-img convert's words for a key it does not know. */
function snapshotChoice(text: string): SnapshotChoice {
  const choice = parseSnapshotParam(text);
  if ('invalidKey' in choice) throw new ConvertError(`Invalid parameter '${choice.invalidKey}'\nFailed in parsing snapshot param '${text}'`);
  return choice;
}

interface Settings {
  sparse: number;
  /** -m: qemu's copy coroutines (with -p, how many chunks it claims ahead of a failed read). */
  coroutines: number;
  snapshot?: SnapshotChoice;
  noCreate: boolean;
  targetIsZero: boolean;
  progress: boolean;
  outputFormat: string;
  /** -t: qemu-img convert's default is 'unsafe', which never flushes the target. */
  outputCache: string;
  /** -T, checked only (the sources are read-only). */
  sourceCache?: string;
}


function settings(cmd: ParsedCommand, ctx: CommandContext): Settings {
  let sparse = 4096;
  let snapshot: SnapshotChoice | undefined;
  let coroutines = 8;
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'sparse-size') sparse = sparseSize(value, ctx);
    else if (key === 'parallel') coroutines = coroutineCount(value, ctx);
    else if (key === 'snapshot') snapshot = snapshotChoice(value);
    else if (key === 'options' && !isValidOptionList(value)) throw new ConvertError(`Invalid option list: ${value}`);
    else if (key === 'rate') rateLimit(value, ctx);
    else if (key === 'object' && !addObject(objects, value, ctx.err, ctx.progname)) throw new ConvertQuietFailure();
  }
  const has = (k: string) => cmd.options.has(k);
  const s: Settings = {
    sparse,
    coroutines,
    snapshot,
    noCreate: has('no-create'),
    targetIsZero: has('target-is-zero'),
    progress: has('progress') && !has('quiet'),
    outputFormat: cmd.options.get('output-format')?.at(-1) ?? 'raw',
    outputCache: cmd.options.get('output-cache')?.at(-1) ?? 'unsafe',
    sourceCache: cmd.options.get('source-cache')?.at(-1),
  };
  // The checks after qemu-img convert's getopt loop, in its order.
  const copyRange = has('copy-range-offloading');
  const checks: [boolean, string][] = [
    [has('skip-broken-bitmaps') && !has('bitmaps'), 'Use of --skip-broken-bitmaps requires --bitmaps'],
    [has('compress') && copyRange, 'Cannot enable copy offloading when -c is used'],
    [has('sparse-size') && copyRange, 'Cannot enable copy offloading when -S is used'],
    [copyRange && has('salvage'), 'Cannot use copy offloading in salvaging mode'],
    [has('target-image-opts') && !s.noCreate, '--target-image-opts requires use of -n flag'],
    [s.noCreate && has('options'), '-o has no effect when skipping image creation'],
    [s.targetIsZero && !s.noCreate, '--target-is-zero requires use of -n flag'],
  ];
  for (const [bad, message] of checks) if (bad) throw new ConvertError(message);
  return s;
}

/** What the open phase found: the sources' virtual sizes, and qemu's message when their block status will fail. */
interface Opened {
  /** Exact: past 2^53 bytes too (a qcow2 of 16 PiB), which qemu sizes its target with. */
  sizes: bigint[];
  blockStatus?: string;
  /** A source's sector count passes INT64_MAX / 512. */
  unsized: boolean;
  /** The int64 sum of the sector counts is negative: qemu copies nothing (ops/convert/sources.ts). */
  nothingToCopy: boolean;
  /** A source has a backing file. */
  backed: boolean;
}

/** The sources as opened, or qemu's message for the first one that cannot be opened; `read` gets every file they read. */
async function openPhase(inputs: InputFile[], targets: Target[], options: ConvertOptions, ctx: CommandContext, read: string[]): Promise<Opened> {
  let result: ConvertOpenResult;
  read.push(...inputs.map((i) => fdFileId(i.fd)));
  try {
    const onOpened = (_file: unknown, fd: number) => void read.push(fdFileId(fd));
    result = (await runWithReferencedFiles('convert', { ...options, phase: 'open' }, inputs, ctx, [], { onOpened })) as ConvertOpenResult;
  } catch (e) {
    if (e instanceof ReferencedFileError) throw referencedFailure(e, targets);
    if (e instanceof OpError) throw new ConvertError(`Could not open '${targets[0].errorName}': ${e.message}`);
    throw e;
  }
  const r = result as Record<string, unknown>;
  checkOpenAnswer(r, targets);
  const sizes = parseSizes(r?.sizes, targets.length);
  if (!sizes) throw new ConvertError('the guest gave a malformed answer');
  const blockStatus = r.blockStatus;
  if (blockStatus !== undefined && !(typeof blockStatus === 'string' && blockStatus.startsWith('error while reading block status at offset '))) {
    throw new ConvertError('the guest gave a malformed answer');
  }
  const nothingToCopy = r.nothingToCopy === true;
  if (nothingToCopy && blockStatus !== undefined) throw new ConvertError('the guest gave a malformed answer');
  return { sizes, blockStatus, unsized: blockStatus !== undefined && r.unsized === true, nothingToCopy, backed: r.backed === true };
}

/**
 * Creates (or, with -n, opens) the target; qemu's wording for each failure. `total` is the sum of
 * the sizes; `unsized`: a source's sector count passes INT64_MAX / 512 (qemu's total, in sectors,
 * is then larger than any file); `negative`: the int64 total of sectors is negative, and no file is
 * smaller than that.
 */
function openTarget(path: string, total: bigint, unsized: boolean, negative: boolean, s: Settings, ctx: CommandContext, errorName = path): number {
  if (s.noCreate) {
    let fd: number;
    try {
      // Read-write, as qemu opens it: its write locks need a file open for reading too.
      fd = openSync(path, constants.O_RDWR | constants.O_NOCTTY);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
      throw new ConvertError(`Could not open '${errorName}': Could not open '${path}': ${strerror(code)}`);
    }
    try {
      lockIntoTarget(fd, path, errorName, true);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    if (!negative && (unsized || targetTooSmall(fd, total))) {
      closeSync(fd);
      throw new ConvertError('output file is smaller than input file');
    }
    return fd;
  }
  return createTarget(path, total, ctx.profile.newUsageErrors, s.outputFormat);
}

/** The copy after an open phase: one guest, or one per core on disjoint ranges for big disks. */
async function copyPhase(inputs: InputFile[], outFd: number, outPath: string, total: number, options: ConvertOptions, printer: ProgressPrinter | undefined, ctx: CommandContext): Promise<void> {
  // -p: one guest, whose chunks follow qemu's runs from the disk's start (parts split by offset
  // could cut a run's chunks elsewhere; the one-round path splits at run starts, split.ts).
  // --salvage: one guest too, so that its warnings come in disk order.
  const cores = printer || options.salvage || !splittableSparse(options.sparseSize) ? 1 : copyGuestCount();
  const ranges = Array.from({ length: cores }, (_, i) => workerRange(total, i, cores)).filter(([a, b], i) => i === 0 || a < b);
  const progress = progressSum(ranges.length, printer);
  const withOutput: InputFile[] = [...inputs, { fd: outFd, path: outPath, writable: true, role: 'output' }];
  // Every guest is awaited (none may write after the host has closed or reset the target); the
  // first failure in guest order is reported, a failed block status first (qemu meets it before
  // anything else).
  const outcomes = await Promise.allSettled(ranges.map((range, i) => {
    const run = { ...ctx.run, onProgress: progress[i] };
    return runWithReferencedFiles('convert', { ...options, phase: 'copy', range: ranges.length > 1 ? range : undefined }, withOutput, { ...ctx, run });
  }));
  const failed = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => o.reason as unknown);
  if (failed.length > 0) throw failed.find(isBlockStatusFailure) ?? failed[0];
}

async function convertSources(cmd: ParsedCommand, ctx: CommandContext, s: Settings, printer: ProgressPrinter | undefined): Promise<void> {
  const specs = cmd.args.slice(0, -1);
  // -n: the target as named, or as --target-image-opts describes it (into-target.ts).
  const into = s.noCreate ? intoTarget(cmd) : undefined;
  const outPath = into?.path ?? cmd.args[cmd.args.length - 1];
  // The plain -l NAME (or 7.2's -s) only: qemu takes -l snapshot.id=/name= with several sources, for the first one.
  if (specs.length > 1 && s.snapshot?.idOrName !== undefined) throw new ConvertError('No support for concatenating multiple snapshot');
  const format = cmd.options.get('source-format')?.at(-1);
  const targets = specs.map((spec) => imageTarget(spec, format, cmd.options.has('image-opts'), true));
  const secrets = sourceSecrets(cmd.options.get('object') ?? [], targets);
  if (s.sourceCache !== undefined && !CACHE_MODES.has(s.sourceCache)) throw new ConvertError(`Invalid source cache option: ${s.sourceCache}`);
  const inputs: InputFile[] = [];
  try {
    for (const t of targets) inputs.push({ fd: openTop(t), path: t.path });
    const options: ConvertOptions = {
      phase: 'open',
      sources: targets.map((t, index) => ({ index, format: t.format, fileName: t.path, unknownOption: t.unknownFormatOption, keyOption: t.probedKeyOption })),
      snapshot: s.snapshot,
      unsafeQuirks: ctx.globals.unsafeQuirks,
      profile: { vhdCurrentSize: ctx.profile.vhdCurrentSize },
      sparseSize: s.sparse,
      targetIsZero: !s.noCreate || s.targetIsZero,
      progress: !!printer,
      coroutines: s.coroutines,
      secrets,
      salvage: cmd.options.has('salvage'),
      copyRange: cmd.options.has('copy-range-offloading'),
    };
    // -O <not raw>: the image pipeline (host/convert/to-image.ts), after the same open phase.
    // --bitmaps: qemu creates even a raw target before it finds it cannot hold bitmaps (to-image-bitmaps.ts).
    if (!isRawFile(into ? (into.format ?? '') : s.outputFormat) || cmd.options.has('bitmaps')) {
      removeEarlyTarget();
      const open = (read: string[]) => openPhase(inputs, targets, options, ctx, read);
      return await convertToImage({ cmd, ctx, s, printer, inputs, targets, options, open });
    }
    const fresh = oneRound(cmd, s, ctx) ? createFreshTarget(outPath) : undefined;
    // A target the CLI's early start created and this path did not take goes before the path is
    // opened by name below (a no-op when it was taken or never made).
    removeEarlyTarget();
    if (fresh !== undefined) {
      if (await copyIntoFresh(inputs, targets, fresh, outPath, options, s, printer, ctx)) return;
    }
    const read: string[] = [];
    // -n: qemu leaves the target untouched when a block status fails, and the host would punch it
    // before the copy finds that: the open guest walks the block status first, as qemu does.
    const walk = s.noCreate ? { walkBlockStatus: true, targetSize: existingSize(outPath) } : {};
    const { sizes, blockStatus, unsized, nothingToCopy, backed } = await openPhase(inputs, targets, { ...options, ...walk }, ctx, read);
    checkZeroInitWithBacking(cmd);
    // -n -B: qemu leaves to the target's backing what a source leaves to its own; with sources without one, -B changes nothing.
    if (s.noCreate && cmd.options.has('backing')) {
      if (targets.length > 1) throw new ConvertError('Having a backing file for the target makes no sense when concatenating multiple input images');
      if (backed) throw new ConvertError('instar cannot convert into an existing raw image (-n) with -B from a source that has a backing file; nothing was written');
    }
    const preallocation = checkTargetFormat(cmd, s, ctx, true);
    const exactTotal = sizes.reduce((a, b) => a + b, 0n);
    // qemu parses -t after creating the target (which then stays), before opening it with -n.
    const badCache = !CACHE_MODES.has(s.outputCache);
    if (badCache && s.noCreate) throw new ConvertError(`Invalid cache option: ${s.outputCache}`);
    const outFd = openTarget(outPath, exactTotal, unsized, nothingToCopy, s, ctx, into?.errorName);
    if (badCache || blockStatus !== undefined) {
      closeSync(outFd);
      // A size qemu cannot tell fails its first block status, after it made the target (which stays).
      throw new ConvertError(badCache ? `Invalid cache option: ${s.outputCache}` : blockStatus!);
    }
    // A negative sector total: qemu's copy loop never runs; the target stays as made or opened.
    if (nothingToCopy) return await copyAndClose(outFd, outPath, s, !s.noCreate, async () => {});
    // A disk past 2^53 bytes that a file system took (ext4's limit, 16 TiB, refuses it first).
    const safe = safeSizes(sizes);
    if (!safe) {
      closeSync(outFd);
      if (!s.noCreate) unlinkQuietly(outPath);
      throw new ConvertError('instar cannot copy a disk of 8 PiB or more');
    }
    const total = safe.reduce((a, b) => a + b, 0);
    try {
      preallocate(outFd, preallocation, total);
    } catch (e) {
      if (!(e instanceof PreallocationFailure)) throw e;
      closeSync(outFd);
      unlinkQuietly(outPath);
      throw new ConvertError(`${outPath}: error while converting ${s.outputFormat}: ${e.message}`);
    }
    // -n: qemu writes the zero runs as write-zeroes requests, holes in a regular file; the host
    // punches the range once and the copy then skips zero runs as on a fresh target.
    if (s.noCreate && !s.targetIsZero && s.sparse > 0 && punchTarget(outFd, total, read)) options.targetIsZero = true;
    await copyAndClose(outFd, outPath, s, !s.noCreate, async () => {
      try {
        await copyPhase(inputs, outFd, outPath, total, options, printer, ctx);
      } catch (e) {
        // A failed block status (a backing file's, say): qemu wrote nothing, and its target stays.
        // -n's target cannot be put back as it was (the copy may have written it): it stays as it is.
        if (isBlockStatusFailure(e)) {
          if (!s.noCreate) resetTarget(outFd, total);
          throw new TargetLeft(e.message);
        }
        if (e instanceof OpError || e instanceof ReferencedFileError) throw new ConvertError(e.message);
        throw e;
      }
    }, (e) => e instanceof TargetLeft);
  } finally {
    for (const i of inputs) closeSync(i.fd);
  }
}

/** The size of the -n target at `path`, at most 2^53 - 1; undefined when it cannot be told (openTarget words that). */
function existingSize(path: string): number | undefined {
  try {
    const size = statSync(path, { bigint: true }).size;
    return size > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(size);
  } catch {
    return undefined;
  }
}

/** Whether qemu's order of checks allows opening and copying in one round (open-copy.ts). */
function oneRound(cmd: ParsedCommand, s: Settings, ctx: CommandContext): boolean {
  if (s.noCreate || !CACHE_MODES.has(s.outputCache)) return false;
  try {
    // A preallocated target is made whole before the copy: the two rounds do that.
    return checkTargetFormat(cmd, s, ctx) === 'off';
  } catch {
    return false;
  }
}

/**
 * One round into the target just created; false (target removed) when the image names the
 * target itself, which the two rounds must handle. Any failure removes the target.
 */
async function copyIntoFresh(inputs: InputFile[], targets: Target[], outFd: number, outPath: string, options: ConvertOptions, s: Settings, printer: ProgressPrinter | undefined, ctx: CommandContext): Promise<boolean> {
  try {
    // qemu created the target before failing to size it, and leaves it (TargetLeft).
    await copyAndClose(outFd, outPath, s, true, () => openAndCopy(inputs, targets, outFd, outPath, options, printer, ctx), (e) => e instanceof TargetLeft);
  } catch (e) {
    if (e instanceof TwoRoundsNeeded) return false;
    throw e;
  }
  return true;
}

/**
 * Runs `copy` into the target, flushes it as -t says, and closes it. When the copy fails, a
 * target this command created is removed (a half-written file must not stay behind looking like
 * a result), unless `kept` says qemu leaves it after that failure.
 */
async function copyAndClose(outFd: number, outPath: string, s: Settings, created: boolean, copy: () => Promise<void>, kept: (e: unknown) => boolean = () => false): Promise<void> {
  let ok = false;
  try {
    await copy();
    // Every mode but 'unsafe' flushes when qemu closes the target (none/directsync also
    // bypass the page cache, which a flush at the end stands in for).
    if (s.outputCache !== 'unsafe') fsyncSync(outFd);
    ok = true;
  } catch (e) {
    if (kept(e)) ok = true;
    throw e;
  } finally {
    closeSync(outFd);
    if (!ok && created) unlinkQuietly(outPath);
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
 * -O and what qemu checks before it creates a raw target, in its order: the -o list parsed
 * against raw's options and the file protocol's (qemu's words for a bad one), -B, -c, then the
 * preallocation mode the file protocol's create refuses. `create`: the checks before the copy
 * (not the one-round probe), where qemu's create of a metadata-preallocated file leaves it empty.
 * Returns the preallocation mode the new target takes ('off' with -n, which creates nothing).
 */
function checkTargetFormat(cmd: ParsedCommand, s: Settings, ctx: CommandContext, create = false): Preallocation {
  const fmt = s.outputFormat;
  if (!isRawFile(fmt)) {
    if (!isDriverName(fmt)) throw new ConvertError(`Unknown file format '${fmt}'`);
    throw new ConvertError(`convert -O ${fmt} is not implemented yet in instar (only raw)`);
  }
  const set = s.noCreate ? new Map<string, SetOption>() : rawCreateOptions(cmd, s, ctx);
  if (cmd.options.has('backing') && !s.noCreate) throw new ConvertError(`Backing file not supported for file format '${fmt}'`);
  if (cmd.options.has('compress')) throw new ConvertError('Compression not supported for this file format');
  const outPath = cmd.args[cmd.args.length - 1];
  const prealloc = set.get('preallocation')?.value ?? 'off';
  if (!PREALLOC_MODES.includes(prealloc)) throw new ConvertError(`${outPath}: error while converting ${fmt}: invalid parameter value: ${prealloc}`);
  if (prealloc === 'metadata') {
    if (create) closeSync(openSync(outPath, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOCTTY, 0o644));
    throw new ConvertError(`${outPath}: error while converting ${fmt}: Unsupported preallocation mode: metadata`);
  }
  // size is replaced by the disk's; nocow and extent_size_hint only hint at allocation (btrfs, xfs).
  return prealloc === 'falloc' || prealloc === 'full' ? prealloc : 'off';
}

type Preallocation = 'off' | 'falloc' | 'full';

/**
 * preallocation=falloc|full, as qemu's file protocol makes the target before the copy: reserved
 * (unwritten, reading as zeros) or written with zeros. The copy then writes only data, as into
 * any new target.
 */
function preallocate(fd: number, mode: Preallocation, length: number): void {
  // Without koffi the new file's holes stay: the same zeros, read back.
  if (mode === 'falloc') reserveBlocks(fd, length);
  else if (mode === 'full') writeZeros(fd, length);
}

/** The -o list as qemu_opts_do_parse takes it for a raw target; qemu's message for a bad item. */
function rawCreateOptions(cmd: ParsedCommand, s: Settings, ctx: CommandContext): Map<string, SetOption> {
  const found = lookupFormat(s.outputFormat, ctx.profile);
  if (!('capability' in found)) throw new Error('raw and file have a create capability');
  try {
    return parseSetOptions(optionText(cmd), typesOf(found.specs), ctx.profile.newUsageErrors);
  } catch (e) {
    if (!(e instanceof OptionListError)) throw e;
    throw new ConvertErrorText(e.lines.map((l) => l.text).join('\n').replace(/\n$/, ''));
  }
}

export const convert: Command = async (cmd, ctx) => {
  let printer: ProgressPrinter | undefined;
  try {
    const s = settings(cmd, ctx);
    // -o help comes right after the getopt loop, before the file names are checked.
    const help = imageOptionHelp(cmd, ctx, s.outputFormat);
    if (help !== undefined) return help;
    if (cmd.args.length < 2) return usageOrPlain(ctx);
    // -p's first line comes before any source is opened, and its newline after any failure.
    if (s.progress) printer = new ProgressPrinter(ctx.out);
    await convertSources(cmd, salvageWarnings(cmd, ctx), s, printer);
    printer?.finish();
    return 0;
  } catch (e) {
    if (e instanceof ConvertStopsWithSuccess) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      printer?.finish();
      return 0;
    }
    printer?.end();
    printer = undefined;
    if (e instanceof ConvertQuietFailure) return 1;
    if (e instanceof ConvertErrorText) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      return 1;
    }
    if (e instanceof ConvertError || e instanceof InputImageError) {
      printErrorLines(ctx, e.message);
      return 1;
    }
    throw e;
  } finally {
    printer?.end();
  }
};

/**
 * --salvage: qemu's warning for each 512-byte sector of a source it could not read (copied as
 * zeros) or whose block status failed; none with -q, but the driver's own notice (qcow2's
 * corruption line, which qemu prints with fprintf) all the same.
 */
function salvageWarnings(cmd: ParsedCommand, ctx: CommandContext): CommandContext {
  if (!cmd.options.has('salvage')) return ctx;
  const quiet = cmd.options.has('quiet');
  const onUnreadable = (kind: 'read' | 'block-status', offset: number, length: number, reason: string, notice?: string) => {
    if (notice !== undefined) ctx.err(`${notice}\n`);
    if (quiet) return;
    const what = kind === 'read' ? 'error while reading offset' : 'error while reading block status at offset';
    for (let at = offset; at < offset + length; at += 512) ctx.err(`${ctx.progname}: warning: ${what} ${at}: ${reason}\n`);
  };
  return { ...ctx, run: { ...ctx.run, onUnreadable } };
}

/** qemu-img says "Must specify image file name" without a usage text, in both versions. */
function usageOrPlain(ctx: CommandContext): number {
  ctx.err(`${ctx.progname}: Must specify image file name\n`);
  return 1;
}
