/**
 * qemu-img's command line: `[standard options] COMMAND [command options]`, parsed with the
 * getopt engine and the per-version tables, with qemu-img's own reactions to each outcome.
 *
 * The two generations differ in how they report argument errors:
 * - 7.2 silences glibc (optstring ':') and prints `PROG: unrecognized option 'X'` or
 *   `PROG: missing argument for option 'X'`, X being argv[optind - 1] whatever glibc left there,
 *   then "Try 'qemu-img --help' for more information". Its `measure` alone lets glibc speak and
 *   then prints the whole help on stdout with status 0.
 * - 10.0 lets glibc speak with argv[0] = "PROG COMMAND", then "Try 'PROG COMMAND --help' for more info".
 * qemu-img hardcodes 'qemu-img' in 7.2's try-help line; instar prints its program name there,
 * which is the same under the qemu-img alias.
 */
import { basename } from 'node:path';
import { Getopt, type GetoptResult } from './parse.ts';
import { commandTable, mainTable, usesModernCli, type ResolvedTable } from './tables.ts';
import { GLOBAL_OPTIONS, emptyRawGlobals, recordGlobal, type RawGlobals } from './globals.ts';
import { EXTRA_ARGUMENT, type ArgvStop, type ParsedCommand } from './types.ts';

/** qemu-img names itself after argv[0]; instar after its script, so the alias says 'qemu-img'. */
export function programName(script: string | undefined): string {
  const name = basename(script ?? 'instar').replace(/\.js$/, '');
  return name === 'cli' || name === '' ? 'instar' : name;
}

export type ParseOutcome =
  | { kind: 'run'; command: ParsedCommand; globals: RawGlobals }
  /** Print qemu-img's main help (stdout) after `stderr`, exit 0. */
  | { kind: 'main-help'; globals: RawGlobals; stderr?: string }
  /** Print the subcommand's help, exit 0. */
  | { kind: 'command-help'; name: string; globals: RawGlobals }
  | { kind: 'version'; globals: RawGlobals }
  /** An argument error: print `stderr`, exit 1. */
  | { kind: 'fail'; stderr: string; globals: RawGlobals };

export interface ParseSettings {
  /** Program name in messages (qemu-img's argv[0] as glibc and qemu print it). */
  progname: string;
  /** The profile's major version: selects 7.2's or 10.0's tables and messages. */
  major: number;
  posixlyCorrect: boolean;
}

/** 7.2's error_exit() / 10.0's error_exit(argv0, ...): a qemu error line plus the try-help line. */
export function usageErrorText(progname: string, command: string | undefined, major: number, message: string): string {
  return `${progname}: ${message}\n` + tryHelp(progname, command, major);
}

function tryHelp(progname: string, command: string | undefined, major: number): string {
  if (!usesModernCli(major)) return `Try '${progname} --help' for more information\n`;
  return `Try '${command === undefined ? progname : `${progname} ${command}`} --help' for more info\n`;
}

/** How one command's getopt error becomes qemu-img's output. */
function reportError(
  err: Extract<GetoptResult, { type: 'error' }>, g: Getopt, table: ResolvedTable, s: ParseSettings,
  command: string | undefined, globals: RawGlobals,
): Extract<ParseOutcome, { kind: 'fail' | 'main-help' }> {
  if (usesModernCli(s.major)) return { kind: 'fail', stderr: err.message + tryHelp(s.progname, command, s.major), globals };
  if (!table.optstring.replace(/^[+-]/, '').startsWith(':')) return { kind: 'main-help', stderr: err.message, globals };
  const culprit = g.argv[g.optind - 1];
  const what = err.code === ':' ? 'missing argument for option' : 'unrecognized option';
  return { kind: 'fail', stderr: usageErrorText(s.progname, command, s.major, `${what} '${culprit}'`), globals };
}

export function parseCommandLine(args: readonly string[], s: ParseSettings): ParseOutcome {
  const globals = emptyRawGlobals();
  const top = mainTable(s.major);
  const main = new Getopt([s.progname, ...args], { ...top, extras: GLOBAL_OPTIONS, posixlyCorrect: s.posixlyCorrect });
  for (;;) {
    const r = main.next();
    if (r.type === 'end') break;
    if (r.type === 'error') return reportError(r, main, top, s, undefined, globals);
    if (r.type === 'extra') recordGlobal(globals, r.name, r.arg);
    else if (r.type === 'option') {
      const key = top.keyOf(r.val);
      if (key === 'help') return { kind: 'main-help', globals };
      if (key === 'version') return { kind: 'version', globals };
      // 'trace' (-T): qemu's tracing has nothing to trace in instar; accepted and ignored.
    }
  }
  if (main.optind >= main.argv.length) {
    return { kind: 'fail', stderr: usageErrorText(s.progname, undefined, s.major, 'Not enough arguments'), globals };
  }
  const name = main.argv[main.optind];
  const table = commandTable(name, s.major);
  if (!table) {
    return { kind: 'fail', stderr: usageErrorText(s.progname, undefined, s.major, `Command not found: ${name}`), globals };
  }
  return parseSubcommand(name, main.argv.slice(main.optind + 1), table, s, globals);
}

function parseSubcommand(
  name: string, args: string[], table: ResolvedTable, s: ParseSettings, globals: RawGlobals,
): ParseOutcome {
  const modern = usesModernCli(s.major);
  // 7.2's resize takes its last argument as the size before getopt runs, so that -1G is no option.
  let trailingSize: string | undefined;
  if (!modern && name === 'resize') {
    if (args.length < 2) return { kind: 'fail', stderr: usageErrorText(s.progname, name, s.major, 'Not enough arguments'), globals };
    trailingSize = args[args.length - 1];
    args = args.slice(0, -1);
  }
  const argv0 = modern ? `${s.progname} ${name}` : name;
  const g = new Getopt([argv0, ...args], { ...table, extras: GLOBAL_OPTIONS, posixlyCorrect: s.posixlyCorrect });
  const command: ParsedCommand = { name, options: new Map(), args: [], sequence: [] };
  // An early stop after options: the command checks them first, as qemu's loop did (argv-stop.ts).
  const stopHere = (outcome: Exclude<ParseOutcome, { kind: 'run' | 'version' }>): ParseOutcome => {
    const optionsBefore = command.sequence?.some(([key]) => key !== '' && key !== EXTRA_ARGUMENT);
    if (!optionsBefore) return outcome;
    const stop: ArgvStop = outcome.kind === 'fail' ? { kind: 'fail', stderr: outcome.stderr }
      : outcome.kind === 'main-help' ? { kind: 'main-help', stderr: outcome.stderr } : { kind: 'command-help' };
    return { kind: 'run', command: { ...command, stop }, globals };
  };
  for (;;) {
    const r = g.next();
    if (r.type === 'end') break;
    if (r.type === 'error') return stopHere(reportError(r, g, table, s, name, globals));
    if (r.type === 'extra') {
      recordGlobal(globals, r.name, r.arg);
    } else if (r.type === 'positional') {
      // Only 10.0's resize hands positionals back in order ('-' optstring); it fails at a third
      // one, after the checks of the options before it (resize.ts meets this mark in the sequence).
      if (command.args.length >= 2) {
        command.sequence?.push([EXTRA_ARGUMENT, r.arg]);
        return { kind: 'run', command, globals };
      }
      command.args.push(r.arg);
      command.sequence?.push(['', r.arg]);
      // A size such as -1G right after the file name is taken before getopt can call it an option.
      const following = g.argv[g.optind];
      if (command.args.length === 1 && following !== undefined && /^-[0-9]/.test(following)) {
        command.args.push(following);
        command.sequence?.push(['', following]);
        g.optind++;
      }
    } else {
      const key = table.keyOf(r.val);
      if (key === 'help') return stopHere(modern ? { kind: 'command-help', name, globals } : { kind: 'main-help', globals });
      const value = r.arg ?? '';
      const list = command.options.get(key);
      if (list) list.push(value);
      else command.options.set(key, [value]);
      command.sequence?.push([key, value]);
    }
  }
  command.args.push(...g.rest());
  if (trailingSize !== undefined) command.args.push(trailingSize);
  return { kind: 'run', command, globals };
}
