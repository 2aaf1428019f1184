/**
 * One qemu-img command line, run: resolves the profile, parses qemu-img's command line, builds the
 * CommandContext and runs the subcommand's trusted half (src/host/commands).
 */
import { commands, meetsArgvStop } from '../host/commands/index.ts';
import { ArgvStopped } from './argv-stop.ts';
import type { ArgvStop } from './types.ts';
import type { Command, CommandContext } from '../host/commands/types.ts';
import type { Profile } from '../output/profile.ts';
import { profileFor, resolveQemuVersionAsync, ProfileError, PROBE_MARKER } from '../output/profile.ts';
import { DEFAULT_MAX_DEPTH } from '../host/paths/policy.ts';
import { parseCommandLine, programName } from './command-line.ts';
import { prescanQemuVersion, finishGlobals, GlobalOptionError, GLOBAL_OPTIONS } from './globals.ts';
import { startGuestEarly, finishEarlyStart } from './early-start.ts';
import { setLockDefaults } from '../host/image-locks.ts';

/** Where a command line's text goes, and the process facts it reads. */
export interface CommandLineIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** The program path (argv[1]): its basename is the name messages print. */
  argv1: string;
  /**
   * Start the sandboxed guest before the command's code loads (early-start.ts). Only for the
   * CLI process itself: the state it keeps is per process, and library calls may overlap.
   */
  earlyGuest?: boolean;
  /** The CLI process only: how its V8 code cache fared (boot.ts), for --debug. */
  codeCache?: string;
}

/** Runs one qemu-img command line; returns the exit status. The library API calls it too. */
export async function runCommandLine(args: string[], io: CommandLineIo): Promise<number> {
  // A profile probe (src/output/profile.ts) reached an instar: decline, so it looks further.
  if (io.env[PROBE_MARKER]) return 3;
  const progname = programName(io.argv1);
  if (!io.earlyGuest) return runWith(args, io, progname);
  try {
    // Before anything else: the guest's Node start is the longest step of a sandboxed info.
    startGuestEarly(args, io.env, io.cwd, progname);
    return await runWith(args, io, progname);
  } finally {
    finishEarlyStart();
  }
}

async function runWith(args: string[], io: CommandLineIo, progname: string): Promise<number> {
  const { out, err, env } = io;

  // The command's code loads while the installed qemu-img is probed (both take milliseconds).
  const preload = loaderFor(guessCommandName(args))?.().catch(() => undefined);
  let resolved: Awaited<ReturnType<typeof resolveQemuVersionAsync>>;
  try {
    resolved = await resolveQemuVersionAsync({ flag: prescanQemuVersion(args), env });
  } catch (e) {
    if (e instanceof ProfileError) {
      err(`${progname}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  const profile = profileFor(resolved.version);
  const outcome = parseCommandLine(args, { progname, major: profile.major, posixlyCorrect: env.POSIXLY_CORRECT !== undefined });
  switch (outcome.kind) {
    case 'fail':
      err(outcome.stderr);
      return 1;
    case 'main-help':
    case 'command-help':
    case 'version':
      return printHelp(outcome, profile, io);
  }

  const { command } = outcome;
  // A command that checks no option as it comes meets the early stop before anything else.
  if (command.stop && !meetsArgvStop.has(command.name)) return reportStop(command.stop, outcome, profile, io);
  let globals;
  try {
    globals = finishGlobals(outcome.globals, env, io.cwd, resolved.version);
  } catch (e) {
    if (e instanceof GlobalOptionError) {
      if (command.stop) return reportStop(command.stop, outcome, profile, io);
      err(`${progname}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  const debug = globals.debug ? (line: string) => err(`${progname}: debug: ${line}\n`) : undefined;
  debug?.(`emulating qemu-img ${resolved.version} (profile from ${resolved.source})`);
  if (io.codeCache) debug?.(`code cache: ${io.codeCache}`);

  await preload;
  const load = loaderFor(command.name);
  const run = load ? await load() : undefined;
  if (!run) {
    err(`${progname}: '${command.name}' is not implemented yet in instar\n`);
    return 1;
  }
  const ctx: CommandContext = {
    progname,
    out,
    err,
    profile,
    globals,
    run: { mode: globals.sandbox ?? 'auto', debug },
    policy: { allow: globals.allowPaths, maxDepth: DEFAULT_MAX_DEPTH },
  };
  setLockDefaults(command);
  try {
    return await run(command, ctx);
  } catch (e) {
    if (e instanceof ArgvStopped) return reportStop(e.stop, outcome, profile, io);
    // A bug or an unexpected system error: one line, the stack only when asked for.
    err(`${progname}: ${e instanceof Error ? e.message : String(e)}\n`);
    if (globals.debug && e instanceof Error && e.stack) err(e.stack + '\n');
    return 1;
  }
}

function loaderFor(name: string | undefined): (() => Promise<Command>) | undefined {
  return name !== undefined && Object.hasOwn(commands, name) ? commands[name] : undefined;
}

/** The first word that is not an option: the subcommand, in every ordinary command line. */
function guessCommandName(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (GLOBALS_WITH_ARGUMENT.has(args[i])) i++;
    else if (!args[i].startsWith('-')) return args[i];
  }
  return undefined;
}

/** instar's own options that take the next word as their argument (globals.ts). */
const GLOBALS_WITH_ARGUMENT = new Set(GLOBAL_OPTIONS.filter((o) => o.hasArg === 1).map((o) => `--${o.name}`));

/** Where qemu-img's getopt loop stopped (argv-stop.ts), once the options before it passed. */
function reportStop(stop: ArgvStop, parsed: Extract<ReturnType<typeof parseCommandLine>, { kind: 'run' }>, profile: Profile, io: CommandLineIo): Promise<number> | number {
  const { globals, command } = parsed;
  if (stop.kind === 'fail') {
    io.err(stop.stderr);
    return 1;
  }
  if (stop.kind === 'main-help') return printHelp({ kind: 'main-help', stderr: stop.stderr, globals }, profile, io);
  return printHelp({ kind: 'command-help', name: command.name, globals }, profile, io);
}

type HelpOutcome = Extract<ReturnType<typeof parseCommandLine>, { kind: 'main-help' | 'command-help' | 'version' }>;

/** --help and --version: their text is built by a module only these need. */
async function printHelp(outcome: HelpOutcome, profile: Profile, io: CommandLineIo): Promise<number> {
  const { mainHelp, commandHelp, versionText } = await import('./help.ts');
  switch (outcome.kind) {
    case 'main-help':
      if (outcome.stderr) io.err(outcome.stderr);
      io.out(mainHelp(profile));
      return 0;
    case 'command-help':
      io.out(commandHelp(outcome.name, profile));
      return 0;
    case 'version':
      io.out(versionText(profile));
      return 0;
  }
}
