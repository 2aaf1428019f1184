// The image a mutating command changes (check -r, snapshot -c/-d/-a, resize, bench -w), opened as
// qemu's read-write open does: the same refusals first (--image-opts read-only=on or
// force-share=on, -U), then O_RDWR. O_DSYNC by default: the guest may not fsync, so each of its
// writes is durable before the next one starts (the executor's order is the crash order).
import { closeSync, constants, fsyncSync } from 'node:fs';
import type { ParsedCommand } from '../cli/types.ts';
import type { CommandContext } from './commands/types.ts';
import { checkFormat, InputImageError, openImageFile, referencedOpenMessage, type Target } from './input-image.ts';
import { parseQemuOpts } from './commands/image-opts.ts';
import { runWithReferencedFiles, ReferencedFileError } from './open-files.ts';
import { OpError } from './sandbox/run.ts';

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
  return openImageFile(target, constants.O_RDWR | (sync ? constants.O_DSYNC : 0));
}

/**
 * Runs `op` in a guest on the opened image `fd` (the files it names granted through the path
 * policy), wording what would not open as qemu does; then, whatever happened, fsyncs the image
 * when it was opened for writing (the guest may not fsync) and closes it.
 */
export async function runOnImage(op: string, options: object, fd: number, target: Target, ctx: CommandContext, writable: boolean): Promise<unknown> {
  try {
    return await runWithReferencedFiles(op, options as Record<string, unknown>, [{ fd, path: target.path, writable }], ctx);
  } catch (e) {
    if (e instanceof ReferencedFileError) throw new InputImageError(referencedOpenMessage(e, target));
    if (e instanceof OpError) throw new InputImageError(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  } finally {
    if (writable) fsyncSync(fd);
    closeSync(fd);
  }
}
