// `commit`: the trusted half. qemu-img's checks in its order (--object and -r in the getopt loop,
// the argument count, the cache mode, the top's read-write open), then a guest that copies the
// data into the base and empties the top. The base is a file an untrusted image names: the host
// grants it through the path policy exactly as for reading (need-files), and only then reopens
// that same file (device and inode checked) read-write for the guest. Both files are fsynced
// after the guest exits.
import { closeSync, constants, fstatSync, fsyncSync, statSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import { EXTRA_ARGUMENT, type ParsedCommand } from '../../cli/types.ts';
import { InputImageError, referencedOpenMessage, topTarget, type Target, guestFormat } from '../input-image.ts';
import { openWritable, PROBED_RAW_WARNING, runRepairingDirty } from '../writable-image.ts';
import { ReferencedFileError } from '../open-files.ts';
import { OpError } from '../sandbox/run.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { parseSizeOption, INT64_MAX } from './qemu-numbers.ts';
import { ProgressRule, progressLine } from '../../output/progress.ts';
import { strerror } from '../../strerror.ts';
import type { NeededFile } from '../../protocol/messages.ts';
import type { CommitOptions, CommitResult } from '../../ops/commit.ts';
import { STREAM_OPTIMIZED_REWRITE } from '../../ops/commit-messages.ts';
import { blockNodeName } from '../../output/node-name.ts';
import { isRawFormat } from '../image-locks.ts';
import { reopenWritable, type ReopenWords } from '../reopen-writable.ts';
import { directCache, UNALIGNED_DIRECT_WRITE, unalignedForDirectWrite } from '../direct-io.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

const CACHE_MODES = new Set(['none', 'off', 'writeback', 'unsafe', 'directsync', 'writethrough']);

/** The getopt loop's checks (--object, -r), then the argument count; a status when they fail. */
function checkOptions(cmd: ParsedCommand, ctx: CommandContext): number | undefined {
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object') {
      if (!addObject(objects, value, ctx.err, ctx.progname)) return 1;
    } else if (key === 'rate') {
      const r = parseSizeOption('rate limit', value, 0n, INT64_MAX, ctx.profile);
      if ('error' in r) {
        for (const line of r.error) ctx.err(`${ctx.progname}: ${line}\n`);
        return 1;
      }
      if (r.warning) ctx.err(`${ctx.progname}: ${r.warning}\n`);
    } else if (key === EXTRA_ARGUMENT) {
      return usageError(ctx, cmd, 'Expecting one image file name');
    }
  }
  if (cmd.args.length !== 1) return usageError(ctx, cmd, 'Expecting one image file name');
  const cache = cmd.options.get('cache')?.at(-1);
  if (cache !== undefined && !CACHE_MODES.has(cache)) {
    ctx.err(`${ctx.progname}: Invalid cache option: ${cache}\n`);
    return 1;
  }
  return undefined;
}

/** Which granted file is the base: -b's file (by name or identity, the first from the top), else the top's backing file. */
function baseChooser(baseName: string | undefined): (file: NeededFile, fd: number) => boolean {
  let wanted: { dev: bigint; ino: bigint } | undefined;
  if (baseName !== undefined) {
    try {
      const st = statSync(baseName, { bigint: true });
      wanted = { dev: st.dev, ino: st.ino };
    } catch {
      // A -b that names no file can still equal a backing file name as written.
    }
  }
  let chosen = false;
  return (file, fd) => {
    if (chosen || file.role !== 'backing') return false;
    if (baseName === undefined) return (chosen = file.referrer === 0);
    const st = fstatSync(fd, { bigint: true });
    return (chosen = file.name === baseName || (wanted !== undefined && st.dev === wanted.dev && st.ino === wanted.ino));
  };
}

/** The base would not open for writing: qemu's job fails after its progress started. */
class BaseOpenError extends InputImageError {}

/** commit's words for a base (or a base's extent) that would not reopen for writing. */
const baseReopenWords = (path: string): ReopenWords => ({
  open: (code) => new BaseOpenError(`Could not open '${path}': ${strerror(code)}`),
  changed: () => new InputImageError(`instar refuses to write '${path}': the file changed while it was opened`),
  locked: (e) => new BaseOpenError(e.message),
});

/** The base (or its extent) reopened read-write by the name qemu gives it (reopen-writable.ts). */
function reopenBase(path: string, fd: number, raw: boolean, direct: boolean): number {
  const rw = reopenWritable(path, fd, constants.O_RDWR | constants.O_DSYNC, { raw }, baseReopenWords(path));
  // qemu's reopen of a raw base for its mirror (write without resize) under -t none: direct-io.ts.
  if (raw && direct && unalignedForDirectWrite(rw)) {
    closeSync(rw);
    throw new BaseOpenError(UNALIGNED_DIRECT_WRITE);
  }
  return rw;
}

function validResult(raw: unknown): CommitResult {
  const r = (raw ?? {}) as Record<string, unknown>;
  if (typeof r.format !== 'string' || !/^[a-z0-9]{1,16}$/.test(r.format)) throw new OpError('the guest gave a malformed commit result');
  // The guest sends only what qemu's print rule lets through: about a hundred values.
  const percentages = (v: unknown) => Array.isArray(v) && v.length <= 1024 && v.every((p) => typeof p === 'number' && p >= 0 && p <= 100);
  if (r.committed === true && percentages(r.progress)) return { format: r.format, committed: true, progress: r.progress as number[] };
  if (r.noBacking === true || r.noBase === true) return r as CommitResult;
  if (r.truncateUnsupported === true) return { format: r.format, truncateUnsupported: true };
  if (r.parentCidMismatch === true && percentages(r.progress)) return { format: r.format, parentCidMismatch: true, progress: r.progress as number[] };
  if (r.reopenUnsupported === 'parallels') return { format: r.format, reopenUnsupported: r.reopenUnsupported };
  if (r.writeFailed === STREAM_OPTIMIZED_REWRITE && Number.isInteger(r.times) && (r.times as number) >= 1 && (r.times as number) <= 16) {
    return { format: r.format, writeFailed: STREAM_OPTIMIZED_REWRITE, times: r.times as number };
  }
  if (typeof r.refused === 'string' && r.refused.length < 1024) return { format: r.format, refused: r.refused.replace(/[\x00-\x1f\x7f]/g, '?') };
  throw new OpError('the guest gave a malformed commit result');
}

async function runCommit(cmd: ParsedCommand, ctx: CommandContext, target: Target, progress: boolean): Promise<number> {
  const baseName = cmd.options.get('base')?.at(-1);
  const fd = openWritable(cmd, target);
  const isBase = baseChooser(baseName);
  const writableFds: number[] = [];
  // The base's place in the device table: a VMDK base's extent files name it as their referrer.
  let baseIndex: number | undefined;
  const options: CommitOptions = {
    format: guestFormat(target.format),
    unsafeQuirks: ctx.globals.unsafeQuirks,
    fileName: target.path,
    profile: ctx.profile,
    secrets: sourceSecrets(cmd.options.get('object') ?? [], [target]),
    // qemu-img empties the top only when the base was not named (-b): iotest 097.
    drop: cmd.options.has('drop') || baseName !== undefined,
  };
  let result: CommitResult;
  try {
    // A dirty qcow2 top is repaired first, as qemu's writable open does.
    const raw = await runRepairingDirty('commit', options, [{ fd, path: target.path, writable: true }], ctx, target, {
      writable: (file, granted, path, index) => {
        // A VMDK base's extent files (flat, split) are written too, as qemu's vmdk driver writes them.
        // (The path policy refuses an extent that is an image of the chain.)
        if (file.role === 'extent' && baseIndex !== undefined && file.referrer === baseIndex) {
          const rw = reopenBase(path, granted, false, false);
          writableFds.push(rw);
          return rw;
        }
        if (!isBase(file, granted)) return undefined;
        baseIndex = index;
        const rw = reopenBase(path, granted, isRawFormat(file.format), directCache(cmd));
        writableFds.push(rw);
        return rw;
      },
    });
    result = validResult(raw);
  } catch (e) {
    if (e instanceof ReferencedFileError) throw new InputImageError(referencedOpenMessage(e, target));
    if (e instanceof OpError) throw new InputImageError(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  } finally {
    // The guest cannot fsync (its permission model refuses it): the host makes the writes durable.
    for (const rw of [fd, ...writableFds]) {
      fsyncSync(rw);
      closeSync(rw);
    }
  }
  if (target.format === undefined && result.format === 'raw') ctx.err(PROBED_RAW_WARNING(target.path));
  // qemu's print rule over its job's progress: 0% first, then what the mirror's operations show.
  const rule = new ProgressRule();
  const show = (percent: number): void => {
    const value = rule.set(percent);
    if (progress && value !== undefined) ctx.out(progressLine(value));
  };
  show(0);
  const fail = (message: string): number => {
    ctx.err(`${ctx.progname}: ${message}\n`);
    if (progress) ctx.out('\n');
    return 1;
  };
  if ('noBacking' in result || 'noBase' in result) {
    return fail(baseName !== undefined ? `Did not find '${baseName}' in the backing chain of '${cmd.args[0]}'` : 'Image does not have a backing file');
  }
  if ('refused' in result) return fail(result.refused);
  if ('reopenUnsupported' in result) return fail(`Block format '${result.reopenUnsupported}' used by node '${blockNodeName()}' does not support reopening files`);
  if ('writeFailed' in result) {
    ctx.err(`${ctx.progname}: ${result.writeFailed}\n`.repeat(result.times));
    return fail('Block job failed: Input/output error');
  }
  if ('parentCidMismatch' in result) {
    for (const p of result.progress) show(p);
    return fail('Block job failed: Invalid argument');
  }
  if ('truncateUnsupported' in result) {
    // qemu's mirror job cannot grow the base; -p has printed 0% three times by then.
    if (progress) ctx.out(progressLine(0).repeat(2));
    return fail('Block job failed: Operation not supported');
  }
  for (const p of result.progress) show(p);
  show(100);
  if (progress) ctx.out('\n');
  if (!cmd.options.has('quiet')) ctx.out('Image committed.\n');
  return 0;
}

export const commit: Command = async (cmd, ctx) => {
  const status = checkOptions(cmd, ctx);
  if (status !== undefined) return status;
  // qemu shows no progress in quiet mode.
  const progress = cmd.options.has('progress') && !cmd.options.has('quiet');
  try {
    return await runCommit(cmd, ctx, topTarget(cmd, cmd.args[0]), progress);
  } catch (e) {
    if (e instanceof InputImageError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      if (progress && e instanceof BaseOpenError) ctx.out(`${progressLine(0)}\n`);
      return 1;
    }
    throw e;
  }
};
