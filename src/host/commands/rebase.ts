// `rebase`: the trusted half. qemu-img's checks in its order (file name count, cache modes, the
// image's open, -F), then the new backing name through the path policy (qemu -u never opens it,
// but instar will not write a name its policy would refuse to follow), then the guest, which
// opens the image read-write (O_DSYNC) and applies the driver's header writes; the host fsyncs.
// Safe mode also grants the new backing file (opened read-only through the same policy) as a
// second input: the guest copies what differs from the old chain before changing the header.
import { closeSync, fsyncSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { OpError } from '../sandbox/run.ts';
import { ReferencedFileError } from '../open-files.ts';
import { checkFormat, InputImageError, topTarget, referencedOpenMessage, type Target, guestFormat } from '../input-image.ts';
import { openImageForWriting, PROBED_RAW_WARNING, runRepairingDirty } from '../writable-image.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { openReferenced, startChain, PathRefusedError, ReferenceOpenError } from '../paths/resolve.ts';
import { progressLine } from '../../output/progress.ts';
import { strerror } from '../../strerror.ts';
import type { RebaseOptions, RebaseResult } from '../../ops/rebase.ts';
import { LockConflict, lockForReading } from '../image-locks.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

const CANNOT_COMPRESS = 'Compression not supported for this file format';
const NO_DRIVER_INFO = 'could not get block driver info';

const CACHE_MODES = new Set(['none', 'off', 'writeback', 'unsafe', 'directsync', 'writethrough']);

/** Every driver name qemu-img's bdrv_find_format knows (its "Supported formats" list, 7.2 and 10.0). */
export const QEMU_FORMAT_NAMES = new Set(('blkdebug blklogwrites blkverify bochs cloop compress copy-before-write copy-on-read dmg file ftp ' +
  'ftps gluster host_cdrom host_device http https iscsi iser luks nbd nfs null-aio null-co nvme parallels preallocate qcow qcow2 ' +
  'qed quorum raw rbd replication snapshot-access ssh throttle vdi vhdx vmdk vpc vvfat').split(' '));

/** Opens the image read-write as qemu does, refusing what its block layer refuses first. */
export function openForWriting(cmd: ParsedCommand, target: Target): number {
  checkFormat(target);
  if (cmd.options.has('force-share') && cmd.name !== 'rebase') {
    throw new InputImageError(`Could not open '${target.errorName}': force-share=on can only be used with read-only images`);
  }
  return openImageForWriting(cmd, target);
}

/** --object options, created as they come: a bad one stops the command there (qemu's order). */
export function checkObjects(cmd: ParsedCommand, ctx: CommandContext): boolean {
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object' && !addObject(objects, value, ctx.err, ctx.progname)) return false;
  }
  return true;
}

/** The policy's answer for a backing name qemu -u would write without opening: a refusal, or undefined. */
function policyRefusal(name: string, target: Target, fd: number, ctx: CommandContext): string | undefined {
  try {
    const opened = openReferenced(name, target.path, 'backing', ctx.policy, startChain(target.path, fd));
    closeSync(opened.fd);
  } catch (e) {
    if (e instanceof PathRefusedError) return e.reason;
    // A name that does not open (yet) is what -u is for: qemu does not open it either.
  }
  return undefined;
}

async function runRebase(cmd: ParsedCommand, ctx: CommandContext, progress: boolean): Promise<number> {
  const target = topTarget(cmd, cmd.args[0]);
  const unsafe = cmd.options.has('backing-unsafe');
  const backing = cmd.options.get('backing')?.at(-1) ?? '';
  const backingFormat = cmd.options.get('backing-format')?.at(-1);
  const fd = openForWriting(cmd, target);
  // qemu's progress ends at 100% once it tried the change; a failure before that ends the line only.
  const fail = (message: string, tried = false): number => {
    ctx.err(`${ctx.progname}: ${message}\n`);
    if (progress) ctx.out(tried ? progressLine(100) + '\n' : '\n');
    return 1;
  };
  let result: RebaseResult;
  let newBacking: { fd: number; path: string } | undefined;
  try {
    // Before the guest opens anything for writing: instar never writes a name its policy refuses.
    const refusal = backing !== '' ? policyRefusal(backing, target, fd, ctx) : undefined;
    // Safe mode reads the new backing file (and its chain): the guest gets it as a second input.
    let newBackingError: string | undefined;
    if (!unsafe && backing !== '' && refusal === undefined) {
      try {
        newBacking = openReferenced(backing, target.path, 'backing', ctx.policy, startChain(target.path, fd));
        lockForReading(newBacking.fd, newBacking.path, backingFormat);
      } catch (e) {
        if (e instanceof LockConflict) {
          newBacking = undefined;
          newBackingError = e.message;
        } else if (e instanceof ReferenceOpenError) newBackingError = e.reason;
        else throw e;
      }
    }
    const options: RebaseOptions = {
      format: guestFormat(target.format),
      unsafeQuirks: ctx.globals.unsafeQuirks,
      fileName: target.path,
      profile: ctx.profile,
      // qemu opens the image for I/O: an encrypted one needs its key.
      secrets: sourceSecrets(cmd.options.get('object') ?? [], [target]),
      unsafe,
      progress,
      backing,
      backingFormat,
      invalidBackingFormat: backingFormat !== undefined && !QEMU_FORMAT_NAMES.has(backingFormat),
      clusterLoop: ctx.profile.major > 8 || (ctx.profile.major === 8 && ctx.profile.minor >= 2),
      compress: cmd.options.has('compress'),
    };
    if (newBackingError !== undefined || refusal !== undefined) {
      // The image still opens first, as qemu's does, so that its own errors come before this one.
      options.openOnly = true;
      const opened = (await runRepairingDirty('rebase', options, [{ fd, path: target.path, writable: true }], ctx, target)) as Record<string, unknown>;
      if (opened.cannotCompress === true) return fail(CANNOT_COMPRESS);
      if (opened.invalidBackingFormat === true) return fail(`Invalid format name: '${backingFormat}'`);
      if (opened.noDriverInfo === true) return fail(NO_DRIVER_INFO);
      if (opened.opened !== true) throw new OpError('the guest gave a malformed rebase result');
      if (newBackingError !== undefined) return fail(`Could not open new backing file '${backing}': ${newBackingError}`);
      return fail(`Could not change the backing file to '${backing}': instar refuses this name (${refusal}); nothing was written`);
    }
    const inputs = [{ fd, path: target.path, writable: true }, ...(newBacking ? [{ fd: newBacking.fd, path: newBacking.path }] : [])];
    result = validRebaseResult(await runRepairingDirty('rebase', options, inputs, ctx, target));
  } catch (e) {
    if (e instanceof ReferencedFileError) throw new InputImageError(referencedOpenMessage(e, target));
    if (e instanceof OpError) throw new InputImageError(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  } finally {
    // The guest cannot fsync (its permission model refuses it): the host makes the change durable.
    fsyncSync(fd);
    closeSync(fd);
    if (newBacking) closeSync(newBacking.fd);
  }
  // The copy loop's percentages, as qemu printed them before its last line.
  if (progress) for (const [p, times] of result.progress ?? []) ctx.out(progressLine(p).repeat(times));
  if (target.format === undefined && result.format === 'raw') ctx.err(PROBED_RAW_WARNING(target.path));
  if ('cannotCompress' in result) return fail(CANNOT_COMPRESS);
  if ('invalidBackingFormat' in result) return fail(`Invalid format name: '${backingFormat}'`);
  if ('noDriverInfo' in result) return fail(NO_DRIVER_INFO);
  if ('refused' in result) return fail(result.refused, true);
  if ('newBackingFailed' in result) return fail(`Could not open new backing file '${backing}': ${result.newBackingFailed}`);
  if ('errno' in result) {
    const why = result.errno === 'ENOSPC' ? 'No space left in the file header'
      : result.errno === 'EINVAL' && backing !== '' && backingFormat === undefined ? 'backing format must be specified'
        : strerror(result.errno);
    return fail(`Could not change the backing file to '${backing}': ${why}`, true);
  }
  if (progress) ctx.out(progressLine(100) + '\n');
  return 0;
}

/** The guest's answer, checked: it is untrusted data. */
function validRebaseResult(raw: unknown): RebaseResult {
  const r = (raw ?? {}) as Record<string, unknown>;
  if (typeof r.format !== 'string' || r.format.length > 64) throw new OpError('the guest gave a malformed rebase result');
  const progress = r.progress;
  const run = (p: unknown) => Array.isArray(p) && p.length === 2 && typeof p[0] === 'number' && p[0] >= 0 && p[0] <= 100 && Number.isSafeInteger(p[1]) && p[1] > 0 && p[1] <= 2 ** 32;
  if (progress !== undefined && (!Array.isArray(progress) || progress.length > 256 || !progress.every(run))) {
    throw new OpError('the guest gave a malformed rebase result');
  }
  if (r.done === true || r.invalidBackingFormat === true || r.cannotCompress === true || r.noDriverInfo === true) return r as RebaseResult;
  if (r.errno === 'ENOSPC' || r.errno === 'EINVAL' || r.errno === 'ENOTSUP') return r as RebaseResult;
  if (typeof r.refused === 'string' && r.refused.length < 1024) return r as RebaseResult;
  if (typeof r.newBackingFailed === 'string' && r.newBackingFailed.length < 1024) return { format: r.format, progress: [], newBackingFailed: r.newBackingFailed.replace(/[\x00-\x1f\x7f]/g, '?') };
  throw new OpError('the guest gave a malformed rebase result');
}

export const rebase: Command = async (cmd, ctx) => {
  if (!checkObjects(cmd, ctx)) return 1;
  if (cmd.args.length !== 1) return usageError(ctx, cmd, 'Expecting one image file name');
  const cache = cmd.options.get('cache')?.at(-1);
  if (cache !== undefined && !CACHE_MODES.has(cache)) {
    ctx.err(`${ctx.progname}: Invalid cache option: ${cache}\n`);
    return 1;
  }
  const sourceCache = cmd.options.get('backing-cache')?.at(-1);
  if (sourceCache !== undefined && !CACHE_MODES.has(sourceCache)) {
    ctx.err(`${ctx.progname}: Invalid source cache option: ${sourceCache}\n`);
    return 1;
  }
  const progress = cmd.options.has('progress') && !cmd.options.has('quiet');
  if (progress) ctx.out(progressLine(0));
  try {
    return await runRebase(cmd, ctx, progress);
  } catch (e) {
    if (e instanceof InputImageError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      if (progress) ctx.out('\n');
      return 1;
    }
    throw e;
  }
};
