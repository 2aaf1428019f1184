/**
 * One qemu-img command line, run: resolves the profile, parses qemu-img's command line, builds the
 * CommandContext and runs the subcommand's trusted half (src/host/commands).
 */
import { commands } from '../host/commands/index.ts';
import type { CommandContext } from '../host/commands/types.ts';
import { profileFor, resolveQemuVersion, ProfileError, PROBE_MARKER } from '../output/profile.ts';
import { DEFAULT_MAX_DEPTH } from '../host/paths/policy.ts';
import { parseCommandLine, programName } from './command-line.ts';
import { prescanQemuVersion, finishGlobals, GlobalOptionError } from './globals.ts';
import { mainHelp, commandHelp, versionText } from './help.ts';

/** Where a command line's text goes, and the process facts it reads. */
export interface CommandLineIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** The program path (argv[1]): its basename is the name messages print. */
  argv1: string;
}

/** Runs one qemu-img command line; returns the exit status. The library API calls it too. */
export async function runCommandLine(args: string[], io: CommandLineIo): Promise<number> {
  const { out, err, env } = io;
  // A profile probe (src/output/profile.ts) reached an instar: decline, so it looks further.
  if (env[PROBE_MARKER]) return 3;
  const progname = programName(io.argv1);

  let resolved: ReturnType<typeof resolveQemuVersion>;
  try {
    resolved = resolveQemuVersion({ flag: prescanQemuVersion(args), env });
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
      if (outcome.stderr) err(outcome.stderr);
      out(mainHelp(profile));
      return 0;
    case 'command-help':
      out(commandHelp(outcome.name, profile));
      return 0;
    case 'version':
      out(versionText(profile));
      return 0;
  }

  let globals;
  try {
    globals = finishGlobals(outcome.globals, env, io.cwd, resolved.version);
  } catch (e) {
    if (e instanceof GlobalOptionError) {
      err(`${progname}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  const debug = globals.debug ? (line: string) => err(`${progname}: debug: ${line}\n`) : undefined;
  debug?.(`emulating qemu-img ${resolved.version} (profile from ${resolved.source})`);

  const { command } = outcome;
  const run = Object.hasOwn(commands, command.name) ? commands[command.name] : undefined;
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
  try {
    return await run(command, ctx);
  } catch (e) {
    // A bug or an unexpected system error: one line, the stack only when asked for.
    err(`${progname}: ${e instanceof Error ? e.message : String(e)}\n`);
    if (globals.debug && e instanceof Error && e.stack) err(e.stack + '\n');
    return 1;
  }
}
