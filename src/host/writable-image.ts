// The image a mutating command changes (check -r, snapshot -c/-d/-a, resize, bench -w), opened as
// qemu's read-write open does: the same refusals first (--image-opts read-only=on or
// force-share=on, -U), then O_RDWR. O_DSYNC by default: the guest may not fsync, so each of its
// writes is durable before the next one starts (the executor's order is the crash order).
import { constants } from 'node:fs';
import type { ParsedCommand } from '../cli/types.ts';
import { checkFormat, InputImageError, openImageFile, type Target } from './input-image.ts';
import { parseQemuOpts } from './commands/image-opts.ts';

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
