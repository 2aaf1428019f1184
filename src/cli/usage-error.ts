import type { ParsedCommand } from './types.ts';
import type { CommandContext } from '../host/commands/types.ts';
import { usageErrorText } from './command-line.ts';

/**
 * For a command's own argument checks after parsing ("Expecting one image file name"): prints
 * qemu-img's error_exit() text for the active profile and returns the exit status (1).
 */
export function usageError(ctx: CommandContext, cmd: ParsedCommand, message: string): number {
  ctx.err(usageErrorText(ctx.progname, cmd.name, ctx.profile.major, message));
  return 1;
}
