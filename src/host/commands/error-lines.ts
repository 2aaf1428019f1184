// qemu's multi-line errors: each line is an error_report of its own ("<progname>: ..."), except
// the hint qemu appends under a lock failure (error_append_hint), which stands alone.
import type { CommandContext } from './types.ts';
import { isLockHint } from '../image-locks.ts';

/** Prints `message` as qemu-img prints it, one error line per line. */
export function printErrorLines(ctx: Pick<CommandContext, 'err' | 'progname'>, message: string): void {
  for (const line of message.split('\n')) ctx.err(isLockHint(line) ? `${line}\n` : `${ctx.progname}: ${line}\n`);
}
