// The image a mutating command changes (check -r, snapshot -c/-d/-a, resize, bench -w), opened as
// qemu's read-write open does: the same refusals first (--image-opts read-only=on or
// force-share=on, -U), then O_RDWR; a dirty qcow2 repaired before the command, as qemu's open does. O_DSYNC by default: the guest may not fsync, so each of its
// writes is durable before the next one starts (the executor's order is the crash order).
import { closeSync, constants, fsyncSync } from 'node:fs';
import { reopenWritable } from './reopen-writable.ts';
import { strerror } from '../strerror.ts';
import type { ParsedCommand } from '../cli/types.ts';
import type { CommandContext } from './commands/types.ts';
import { checkFormat, InputImageError, lockTarget, openImageFile, referencedOpenMessage, type Target } from './input-image.ts';
import { parseQemuOpts } from './commands/image-opts.ts';
import { runWithReferencedFiles, ReferencedFileError, type InputFile, type ReferencedFileHooks } from './open-files.ts';
import { OpError } from './sandbox/run.ts';
import { validCheckLines } from './commands/check-result.ts';
import { writeCheckLines } from '../output/image-check.ts';
import type { DirtyRepairResult } from '../ops/dirty-repair.ts';
import { checkDirectWrite, padDirectWrites } from './direct-io.ts';

const isDirtyAnswer = (v: unknown): boolean => typeof v === 'object' && v !== null && (v as { dirtyImage?: unknown }).dirtyImage === true;

/** The guest's answer to repair-dirty, checked as a check report's lines are. */
function validDirtyRepair(value: unknown): DirtyRepairResult {
  const fail = () => new OpError('the guest gave a malformed repair result');
  const r = (value ?? {}) as Record<string, unknown>;
  if (r.refused !== undefined) {
    if (typeof r.refused !== 'string' || !/^[A-Za-z0-9 ,.;:'()/_-]{1,200}$/.test(r.refused)) throw fail();
    return { refused: r.refused };
  }
  const lines = validCheckLines(r.lines);
  if (!lines) throw fail();
  if (r.failed === undefined) return { lines };
  if (typeof r.failed !== 'string' || !/^[A-Za-z0-9 ,'()/-]{1,100}$/.test(r.failed)) throw fail();
  return { failed: r.failed, lines };
}

/** What qemu's block layer prints when it opens a probed raw image for writing (block 0 then restricted). */
export const PROBED_RAW_WARNING = (name: string): string =>
  `WARNING: Image format was not specified for '${name}' and probing guessed raw.\n` +
  '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
  "         Specify the 'raw' format explicitly to remove the restrictions.\n";

/** An --image-opts boolean as qemu parses it; undefined when absent. */
export function imageOptsFlag(cmd: ParsedCommand, target: Target, name: string): boolean | undefined {
  if (!cmd.options.has('image-opts')) return undefined;
  const value = parseQemuOpts(cmd.args[0], 'file').get(name);
  if (value === undefined) return undefined;
  if (['on', 'yes', 'true'].includes(value)) return true;
  if (['off', 'no', 'false'].includes(value)) return false;
  throw new InputImageError(`Could not open '${target.errorName}': Parameter '${name}' expects 'on' or 'off'`);
}

/** Opens `target` read-write, refusing first what qemu's open refuses; `sync` false leaves out O_DSYNC. */
export function openWritable(cmd: ParsedCommand, target: Target, sync = true): number {
  checkFormat(target);
  const fail = (why: string) => new InputImageError(`Could not open '${target.errorName}': ${why}`);
  if (imageOptsFlag(cmd, target, 'read-only')) throw fail('Block node is read-only');
  if (imageOptsFlag(cmd, target, 'force-share') || cmd.options.has('force-share')) throw fail('force-share=on can only be used with read-only images');
  return openImageForWriting(cmd, target, sync);
}

/** The read-write open itself, once the command's own refusals passed: qemu's write locks, then its O_DIRECT check. */
export function openImageForWriting(cmd: ParsedCommand, target: Target, sync = true): number {
  const fd = openImageFile(target, constants.O_RDWR | (sync ? constants.O_DSYNC : 0));
  lockTarget(fd, target, 'write');
  checkDirectWrite(cmd, target, fd);
  return fd;
}

/**
 * Runs `op` in a guest on the opened image `fd` (the files it names granted through the path
 * policy), wording what would not open as qemu does; then, whatever happened, fsyncs the image
 * when it was opened for writing (the guest may not fsync) and closes it.
 */
export async function runOnImage(op: string, options: object, fd: number, target: Target, ctx: CommandContext, writable: boolean, beforeClose?: (answer: unknown) => void, hooks?: ReferencedFileHooks): Promise<unknown> {
  try {
    const answer = await runRepairingDirty(op, options, [{ fd, path: target.path, writable }], ctx, target, hooks);
    beforeClose?.(answer);
    return answer;
  } catch (e) {
    if (e instanceof ReferencedFileError) throw new InputImageError(referencedOpenMessage(e, target));
    if (e instanceof OpError) throw new InputImageError(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  } finally {
    if (writable) fsyncSync(fd);
    closeSync(fd);
  }
}

/**
 * Runs `op` (files it names granted through the path policy); when it answers that its image (the
 * first input) is a dirty qcow2, repairs it first as qemu's writable open does, printing the
 * check's lines (ops/dirty-repair.ts), and runs `op` again.
 */
export async function runRepairingDirty(op: string, options: object, inputs: InputFile[], ctx: CommandContext, target: Target, hooks?: ReferencedFileHooks): Promise<unknown> {
  const run = (name: string) => runWithReferencedFiles(name, options as Record<string, unknown>, inputs, ctx, [], name === op ? hooks : undefined);
  try {
    return await runRepairing(op, run, ctx, target);
  } finally {
    // What qemu's O_DIRECT writes leave at the end of the file (host/direct-io.ts).
    padDirectWrites(inputs[0].fd);
  }
}

async function runRepairing(op: string, run: (name: string) => Promise<unknown>, ctx: CommandContext, target: Target): Promise<unknown> {
  const value = await run(op);
  if (!isDirtyAnswer(value)) return value;
  const repair = validDirtyRepair(await run('repair-dirty'));
  if ('refused' in repair) throw new InputImageError(repair.refused);
  writeCheckLines(repair.lines, ctx.err, ctx.progname);
  if ('failed' in repair) throw new InputImageError(`Could not open '${target.errorName}': Could not repair dirty image: ${repair.failed}`);
  const again = await run(op);
  if (isDirtyAnswer(again)) throw new InputImageError(`Could not open '${target.errorName}': the image is still dirty after its repair`);
  return again;
}

/**
 * Hooks that grant the image's own external data file (qcow2 data_file, named by the first input)
 * for writing: reopened read-write by the path the policy resolved and checked to be the same file
 * (device and inode). Its locks stay on the descriptor the policy opened, held until the op ends,
 * as qemu's writable open holds them. `close` fsyncs and closes what was opened.
 */
export function writableDataFile(): { hooks: ReferencedFileHooks; close(): void } {
  const opened: number[] = [];
  const hooks: ReferencedFileHooks = {
    writable: (file, granted, path) => {
      if (file.role !== 'data-file' || file.referrer !== 0) return undefined;
      const rw = reopenWritable(path, granted, constants.O_RDWR | constants.O_DSYNC | constants.O_NOFOLLOW, 'keep', {
        open: (code) => new InputImageError(`Could not open '${path}': ${strerror(code)}`),
        changed: () => new InputImageError(`instar refuses to write '${path}': the file changed while it was opened`),
        locked: (e) => e,
      });
      opened.push(rw);
      return rw;
    },
  };
  const close = () => {
    for (const rw of opened.splice(0)) {
      fsyncSync(rw);
      closeSync(rw);
    }
  };
  return { hooks, close };
}
