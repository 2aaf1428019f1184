// The CLI's early guest start (src/host/sandbox/early.ts): for `info`, `map` and `check`, the
// command line is parsed once ahead of time, the image it names is opened as the command will
// open it, and the sandboxed guest starts booting while the profile probe runs and the command's
// code loads. Anything unusual (a parse error, --sandbox=none, a file that does not open) simply
// skips it: the normal path then does everything and reports any error in qemu's words.
import { parseCommandLine } from './command-line.ts';
import { finishGlobals, prescanQemuVersion } from './globals.ts';
import { NEWEST, parseQemuVersion, profileFor } from '../output/profile.ts';
// Static on purpose: a dynamic import costs a round of the event loop per module graph.
import { preopenTop, topTarget, closePreopened } from '../host/input-image.ts';
import { startEarlyGuest, discardEarlyGuest } from '../host/sandbox/early.ts';

/** Set once something was started: what finishEarlyStart must undo. */
let cleanup: (() => void) | undefined;

/** Commands whose first launch is known from the command line alone: one input, read-only. */
const EARLY_COMMANDS = new Set(['info', 'map', 'check']);

export function startGuestEarly(args: string[], env: NodeJS.ProcessEnv, cwd: string, progname: string): void {
  let major: number;
  try {
    const flag = prescanQemuVersion(args) ?? (env.INSTAR_QEMU_VERSION || undefined);
    major = profileFor(flag === undefined ? NEWEST : parseQemuVersion(flag, 'the command line')).major;
  } catch {
    return;
  }
  const outcome = parseCommandLine(args, { progname, major, posixlyCorrect: env.POSIXLY_CORRECT !== undefined });
  if (outcome.kind !== 'run' || !EARLY_COMMANDS.has(outcome.command.name) || outcome.command.args.length !== 1) return;
  const { name } = outcome.command;
  let mode;
  try {
    mode = finishGlobals(outcome.globals, env, cwd, NEWEST).sandbox ?? 'auto';
  } catch {
    return;
  }
  if (mode === 'none') return;
  let fd;
  try {
    const target = topTarget(outcome.command, outcome.command.args[0]);
    if (target.format === 'file') return;
    fd = preopenTop(target);
  } catch {
    return;
  }
  if (fd === undefined) return;
  cleanup = () => {
    discardEarlyGuest();
    closePreopened();
  };
  startEarlyGuest(name, [{ fd, role: 'input', writable: false }], { mode });
}

/** After the command: a guest nobody claimed is ended, a file nobody took is closed. */
export function finishEarlyStart(): void {
  cleanup?.();
  cleanup = undefined;
}
