/**
 * qemu-img checks some options inside its getopt loop, as each comes: a bad value met before an
 * unknown option (or -h) is what it reports. The parser keeps the stop (types.ts, `stop`) and a
 * command's option loop meets it after the options before it: optionsInOrder throws ArgvStopped
 * there, and the CLI reports the stop as the parser would have.
 */
import type { ArgvStop, ParsedCommand } from './types.ts';

export class ArgvStopped extends Error {
  constructor(readonly stop: ArgvStop) {
    super('the command line stops here');
  }
}

/** The options in command-line order; throws ArgvStopped after the last when the parse stopped early. */
export function* optionsInOrder(cmd: ParsedCommand): Generator<[key: string, value: string]> {
  yield* cmd.sequence ?? [];
  if (cmd.stop) throw new ArgvStopped(cmd.stop);
}
