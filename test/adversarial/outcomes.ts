// What each command must do with a hostile image, declared per command so that a command that
// lands later (map, compare, convert) is checked as soon as it exists.

export const COMMANDS = ['info', 'inspect', 'map', 'compare', 'convert', 'check', 'dd', 'snapshot'] as const;
export type CommandName = (typeof COMMANDS)[number];
/** Commands whose outcome each case declares; the others' are derived (derived-outcomes.ts). */
export type DeclaredCommand = Exclude<CommandName, 'dd' | 'snapshot'>;

export interface Outcome {
  /** The exit status, or the statuses allowed (inspect's verdict on metadata it does not judge). */
  exit: number | number[];
  /** Must match stderr (for a refusal: the one line's reason). */
  stderr?: RegExp;
  /** Must match stdout. */
  stdout?: RegExp;
}

export type Expectations = Record<DeclaredCommand, Outcome> & Partial<Record<CommandName, Outcome>>;

/** The command line of each command for an image (`out` is a scratch output path). */
export function commandLine(cmd: CommandName, image: string, out: string): string[] {
  switch (cmd) {
    case 'info':
      return ['info', '--backing-chain', image];
    case 'inspect':
      return ['inspect', image];
    case 'map':
      return ['map', '--output=json', image];
    case 'compare':
      return ['compare', image, image];
    case 'convert':
      return ['convert', '-O', 'raw', image, out];
    case 'check':
      return ['check', image];
    case 'dd':
      return ['dd', `if=${image}`, `of=${out}`];
    case 'snapshot':
      return ['snapshot', '-l', image];
  }
}

/**
 * Refused at open: one line, exit 1 (compare reports errors with exit 2, as qemu-img's does);
 * inspect's verdict is UNSAFE (exit 1) unless `inspect` says otherwise.
 */
export function refused(reason?: RegExp, inspect: Outcome = { exit: 1, stdout: /verdict: UNSAFE/ }): Expectations {
  return {
    info: { exit: 1, stderr: reason },
    inspect,
    map: { exit: 1, stderr: reason },
    compare: { exit: 2, stderr: reason },
    convert: { exit: 1, stderr: reason },
    check: { exit: 1, stderr: reason },
  };
}

/** Opens and lists, but reading the data fails (compare's status for a read error is 4). */
export function unreadable(reason: RegExp, inspect: Outcome = VERDICT): Expectations {
  // check reads metadata only: what it reports is set per case (check-outcomes.ts).
  return { info: { exit: 0 }, inspect, map: { exit: 0 }, compare: { exit: 4, stderr: reason }, convert: { exit: 1, stderr: reason }, check: CHECK_COMPLETES };
}

/** Opens and reads: every command succeeds (compare of the image with itself: identical). */
export function opens(stdout?: RegExp, inspect: Outcome = { exit: 1, stdout: /verdict: UNSAFE/ }): Expectations {
  return {
    info: { exit: 0, stdout },
    inspect,
    map: { exit: 0 },
    compare: { exit: 0, stdout: /Images are identical/ },
    convert: { exit: 0 },
    check: CHECK_COMPLETES,
  };
}

/** The check ran to its end (0 clean, 2 corrupt, 3 leaks, 63 no checker); cases say which (check-outcomes.ts). */
export const CHECK_COMPLETES: Outcome = { exit: [0, 2, 3, 63] };

export const SAFE: Outcome = { exit: 0, stdout: /verdict: safe/ };
export const UNSAFE: Outcome = { exit: 1, stdout: /verdict: UNSAFE/ };
/** Either verdict, but a verdict (inspect judges references and formats, not every header field). */
export const VERDICT: Outcome = { exit: [0, 1], stdout: /verdict: (safe|UNSAFE)/ };
/** inspect could not read the file at all (exit 2). */
export const NOT_INSPECTED: Outcome = { exit: 2 };
