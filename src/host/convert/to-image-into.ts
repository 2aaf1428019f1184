// `convert -n` into an existing qcow2 image or LUKS volume (-O, or --target-image-opts), the
// trusted half: the target exists and is opened read-write by the host (the user named it, as a
// new target's path); a guest copies the sources into it as qemu does
// (ops/convert/to-image-into.ts) and the host fsyncs it as -t says. What instar does not write
// into is refused before anything is written.
import { closeSync, constants, fstatSync, fsyncSync, openSync } from 'node:fs';
import { fdFileId } from '../punch-holes.ts';
import { ConvertError } from './errors.ts';
import { CACHE_MODES } from './early-plan.ts';
import { runWithReferencedFiles, ReferencedFileError } from '../open-files.ts';
import type { NeededFile } from '../../protocol/messages.ts';
import { OpError } from '../sandbox/run.ts';
import { strerror } from '../../strerror.ts';
import { escapeForTerminal } from '../../output/terminal.ts';
import { referencedFailure } from './open-copy.ts';
import type { ImageJob } from './to-image.ts';
import type { ConvertIntoOptions, ConvertIntoResult } from '../../ops/convert/to-image-into.ts';
import { isDriverName } from '../../formats/names.ts';
import { parseSecretObjects } from '../secrets.ts';
import { checkZeroInitWithBacking, intoTarget, type IntoTarget } from './into-target.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { bitmapWarnings, wantsBitmaps } from './to-image-bitmaps.ts';
import { isRawFormat, LockConflict, lockImage } from '../image-locks.ts';
import { reopenWritable, type ReopenWords } from '../reopen-writable.ts';

/** The guest's bitmap failure message (convert -n --bitmaps), checked; undefined when none. */
function copyFailure(result: Record<string, unknown>): string | undefined {
  const m = result.bitmapFailed;
  if (m === undefined) return undefined;
  if (typeof m !== 'string' || m.length > 8192 || /[\x00-\x1f\x7f]/.test(m) || !/^Failed to (create|populate) bitmap /.test(m)) throw new ConvertError('the guest gave a malformed answer');
  return m;
}

/** The formats instar writes into in place (undefined: probed, the guest decides). */
const INTO_FORMATS = new Set(['qcow2', 'luks', 'vdi', 'vpc', 'qed', 'parallels', 'qcow', 'vmdk', 'vhdx']);

/** The target's key, base64 by its device index, or qemu's message when no --object has its id. */
function targetSecret(cmd: ParsedCommand, target: IntoTarget, index: number): Record<number, string> {
  if (target.keySecret === undefined) return {};
  const secret = parseSecretObjects(cmd.options.get('object') ?? []).get(target.keySecret);
  // A probed target's key-secret matters only if it probes as luks: the guest words that.
  if (!secret && target.probedOptions) return {};
  if (!secret) throw new ConvertError(`Could not open '${target.errorName}': No secret with id '${target.keySecret}'`);
  return { [index]: secret.toString('base64') };
}


/**
 * qemu's locks on an existing target (-n): another process's image (or a source's) is refused. A
 * raw one holds what a new raw target holds (convert asks for no resize); a format writes its own.
 */
export function lockIntoTarget(fd: number, path: string, errorName: string, raw = false): void {
  try {
    lockImage(fd, 'target', false, path, raw);
  } catch (e) {
    if (e instanceof LockConflict) throw new ConvertError(`Could not open '${errorName}': ${e.message}`);
    throw e;
  }
}

/** How convert -n words an extent file that would not reopen for writing. */
const extentReopenWords = (path: string): ReopenWords => ({
  open: (code) => new ConvertError(`Could not open '${path}': ${strerror(code)}`),
  changed: () => new ConvertError(`instar refuses to write '${path}': the file changed while it was opened`),
  locked: (e) => new ConvertError(`Could not open '${path}': ${e.message}`),
});

export async function convertIntoImage(job: ImageJob): Promise<void> {
  const { cmd, ctx, s } = job;
  const target = intoTarget(cmd);
  const outPath = target.path;
  const refuse = (why: string) => new ConvertError(`instar cannot convert into an existing ${target.format} image (-n) ${why}; nothing was written`);
  const read: string[] = [];
  const opened = await job.open(read);
  if (opened.blockStatus !== undefined || opened.nothingToCopy) {
    throw new ConvertError(opened.blockStatus ?? 'instar cannot convert sources whose sizes add up past 2^63 bytes');
  }
  checkZeroInitWithBacking(cmd);
  const backing = cmd.options.has('backing');
  if (backing && job.targets.length > 1) throw new ConvertError('Having a backing file for the target makes no sense when concatenating multiple input images');
  if (!CACHE_MODES.has(s.outputCache)) throw new ConvertError(`Invalid cache option: ${s.outputCache}`);
  // qemu opens the target here: the option string's failures, the driver, the file, its secret.
  if (target.failure !== undefined) throw new ConvertError(target.failure);
  if (target.format !== undefined && !isDriverName(target.format)) throw new ConvertError(`Could not open '${target.errorName}': Unknown driver '${target.format}'`);
  if (target.format !== undefined && !INTO_FORMATS.has(target.format)) throw refuse('yet');
  let fd: number;
  const extents: number[] = [];
  try {
    // O_NONBLOCK: a FIFO must not hang the open; anything but a regular file is refused below.
    // O_DSYNC unless -t unsafe (qemu-img convert's default): the plan's barriers then hold across a power loss too.
    const sync = s.outputCache === 'unsafe' ? 0 : constants.O_DSYNC;
    fd = openSync(outPath, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK | sync);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new ConvertError(`Could not open '${target.errorName}': Could not open '${outPath}': ${strerror(code)}`);
  }
  try {
    if (!fstatSync(fd).isFile()) throw new ConvertError(`instar writes images only into regular files, and '${outPath}' is not one`);
    lockIntoTarget(fd, outPath, target.errorName);
    if (read.includes(fdFileId(fd))) throw refuse('that the sources read');
    const secrets = { ...job.options.secrets, ...targetSecret(cmd, target, job.inputs.length) };
    const options: ConvertIntoOptions = {
      sources: job.options.sources,
      target: job.inputs.length,
      targetName: outPath,
      format: target.format,
      probedOptions: target.probedOptions,
      parallelsDiscards: ctx.profile.major > 8 || (ctx.profile.major === 8 && ctx.profile.minor >= 2),
      qemu: { major: ctx.profile.major, minor: ctx.profile.minor },
      missingSecret: target.probedOptions && target.keySecret !== undefined && !(job.inputs.length in secrets) ? target.keySecret : undefined,
      compressed: cmd.options.has('compress'),
      snapshot: job.options.snapshot,
      unsafeQuirks: job.options.unsafeQuirks,
      profile: job.options.profile,
      secrets,
      sparseSize: s.sparse,
      targetIsZero: s.targetIsZero,
      salvage: job.options.salvage,
      backingGiven: backing,
      progress: !!job.printer,
      bitmaps: wantsBitmaps(cmd),
    };
    const run = { ...ctx.run, onProgress: (done: number, all: number) => (done > 0 ? job.printer?.show((100 * done) / all) : undefined) };
    let result: ConvertIntoResult;
    try {
      const inputs = [...job.inputs, { fd, path: outPath, writable: true, role: 'output' as const }];
      // A VMDK target's extent files are written too (flat extents): granted read-write.
      const writable = (file: NeededFile, granted: number, path: string): number | undefined => {
        if (file.role !== 'extent' || file.referrer !== job.inputs.length) return undefined;
        if (read.includes(fdFileId(granted))) throw refuse('whose extent files the sources read');
        const flags = constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK | (s.outputCache !== 'unsafe' ? constants.O_DSYNC : 0);
        // A flat extent (raw) is the VMDK's data child: qemu unshares its resize only.
        const rw = reopenWritable(path, granted, flags, { raw: false, dataChild: isRawFormat(file.format) }, extentReopenWords(path));
        extents.push(rw);
        return rw;
      };
      result = (await runWithReferencedFiles('convert-into', options as unknown as Record<string, unknown>, inputs, { ...ctx, run }, undefined, { writable })) as ConvertIntoResult;
    } catch (e) {
      // A file the target names (its backing chain) is worded under the target's name.
      if (e instanceof ReferencedFileError && e.file.referrer >= job.inputs.length) throw new ConvertError(`Could not open '${target.errorName}': ${e.message}`);
      if (e instanceof ReferencedFileError) throw referencedFailure(e, job.targets);
      if (e instanceof OpError) throw new ConvertError(e.message);
      throw e;
    }
    if (typeof result !== 'object' || result === null) throw new ConvertError('the guest gave a malformed answer');
    // The reason may quote the image (a VMDK's createType): escaped, as every string from an image.
    if ('openFailed' in result) throw new ConvertError(`Could not open '${target.errorName}': ${escapeForTerminal(String(result.openFailed))}`);
    if ('cannotCompress' in result) throw new ConvertError('Compression not supported for this file format');
    if ('bitmapsUnsupported' in result) throw new ConvertError(`Format driver '${target.format}' does not support bitmaps`);
    if ('tooSmall' in result) throw new ConvertError('output file is smaller than input file');
    // A refusal may name a file the image names (a VMDK extent): escaped, as every string from an image.
    if ('refused' in result) throw new ConvertError(escapeForTerminal(String(result.refused)));
    if ('writeFailed' in result) {
      if (typeof result.writeFailed !== 'string' || !/^error while writing at byte \d{1,20}: [A-Za-z ]{1,64}$/.test(result.writeFailed)) throw new ConvertError('the guest gave a malformed answer');
      throw new ConvertError(result.writeFailed);
    }
    if (!('counted' in result)) throw new ConvertError('the guest gave a malformed answer');
    const warnings = bitmapWarnings(result as Record<string, unknown>);
    const bitmapFailed = copyFailure(result as Record<string, unknown>);
    if (s.outputCache !== 'unsafe') for (const written of [...extents, fd]) fsyncSync(written);
    for (const line of warnings) ctx.err(`${ctx.progname}: ${line}\n`);
    // The disk is copied; qemu's failing bitmap add or merge ends the convert with status 1.
    if (bitmapFailed !== undefined) throw new ConvertError(escapeForTerminal(bitmapFailed));
  } finally {
    for (const extent of extents) closeSync(extent);
    closeSync(fd);
  }
}
