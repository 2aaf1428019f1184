import type { ParsedCommand, GlobalOptions } from '../../cli/types.ts';
import type { Profile } from '../../output/profile.ts';
import type { RunOptions } from '../sandbox/run.ts';
import type { PathPolicy } from '../paths/policy.ts';

/** Everything a subcommand's trusted half needs besides its parsed arguments. */
export interface CommandContext {
  /** Program name for messages: basename of argv[1] ('instar', or 'qemu-img' under the alias). */
  progname: string;
  out: (text: string) => void;
  err: (text: string) => void;
  profile: Profile;
  globals: GlobalOptions;
  run: RunOptions;
  policy: PathPolicy;
}

/** A subcommand's trusted half: returns the process exit status. */
export type Command = (cmd: ParsedCommand, ctx: CommandContext) => Promise<number>;
