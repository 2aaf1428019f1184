/** The result of parsing one subcommand's arguments (getopt_long-compatible, see parse.ts). */
export interface ParsedCommand {
  /** The subcommand name as qemu-img knows it, e.g. 'info'. */
  name: string;
  /**
   * Options by their canonical key (the long name where one exists, e.g. 'format' for -f,
   * 'output', 'backing-chain', 'force-share' for -U, 'object'). Keys are qemu-img 10.0's long
   * names, whichever profile parsed them (compare -f is 'a-format', convert -O 'output-format',
   * measure -O 'target-format'); see src/cli/tables.ts. Every occurrence is kept in order;
   * flags have the value ''.
   */
  options: Map<string, string[]>;
  /** Positional arguments, in order (dd operands like if=x stay here too). */
  args: string[];
  /**
   * Every option as [key, value] in command-line order, for commands whose qemu-img validates
   * inside its getopt loop (the first bad value wins). Positionals appear as ['', arg] only
   * where qemu-img sees them interleaved (10.0's resize), and one positional too many as
   * [EXTRA_ARGUMENT, arg], where parsing stopped as qemu's loop does.
   */
  sequence?: Array<[key: string, value: string]>;
  /**
   * Where qemu-img's getopt loop stopped before the end (a bad option, a missing argument, -h)
   * after options it checks as they come: those checks still run first, in order, and this is
   * reported only when they pass (see optionsInOrder in argv-stop.ts).
   */
  stop?: ArgvStop;
}

/** What qemu-img does where its getopt loop stops early: an argument error or a help text. */
export type ArgvStop =
  | { kind: 'fail'; stderr: string }
  | { kind: 'main-help'; stderr?: string }
  | { kind: 'command-help' };

/** The sequence key of a positional qemu-img's loop rejects when it meets it (10.0's resize). */
export const EXTRA_ARGUMENT = 'extra-argument';

/** Options instar adds to every subcommand (not in qemu-img). */
export interface GlobalOptions {
  sandbox?: 'auto' | 'strict' | 'none';
  debug: boolean;
  qemuVersion?: string;
  allowPaths: string[];
  unsafeQuirks: boolean;
  ignoreQuirks: boolean;
}
