// The CLI's early guest start (src/host/sandbox/early.ts): the command line is parsed once ahead
// of time, the files it names are opened as the command will open them, and the sandboxed
// guests start booting while the profile probe runs and the command's code loads.
//  - info, map, check (not check -r): one input, read-only; one guest.
//  - convert into a new raw target (src/host/convert/early-plan.ts): the sources read-only, the
//    target created O_EXCL as the command creates it, and one copy guest per core.
// The launch later claims a parked guest only when its argv and fd table are the same; the
// request (options included) is written only then, so nothing the command computes later has to
// be guessed here. Anything unusual (a parse error, --sandbox=none, a file that does not open, a
// target that exists) simply skips it: the normal path then does everything and reports any
// error in qemu's words. Whatever the command did not take is undone by finishEarlyStart: the
// guests killed, the files closed, and a target it created removed, since qemu creates nothing
// for a command line it refuses.
import { parseCommandLine, type ParseOutcome } from './command-line.ts';
import { finishGlobals, prescanQemuVersion } from './globals.ts';
import type { ParsedCommand } from './types.ts';
import { NEWEST, parseQemuVersion, profileFor } from '../output/profile.ts';
// Static on purpose: a dynamic import costs a round of the event loop per module graph.
import { preopenTop, topTarget, closePreopened, imageTarget } from '../host/input-image.ts';
import { startEarlyGuest, discardEarlyGuests } from '../host/sandbox/early.ts';
import { setLockDefaults } from '../host/image-locks.ts';
import type { HostDevice, SandboxMode } from '../host/sandbox/run.ts';
import { earlyConvertFiles } from '../host/convert/early-plan.ts';
import { copyGuestCount, createEarlyTarget, removeEarlyTarget } from '../host/convert/fresh-target.ts';

/** Set once something was started: what finishEarlyStart must undo. */
let cleanup: (() => void) | undefined;

/** Commands whose first launch is known from the command line alone: one input, read-only. */
const INSPECT_COMMANDS = new Set(['info', 'map', 'check']);

/** The table majors qemu-img's command lines are parsed by (tables.ts: below 10.0, and 10.0 on). */
const TABLE_MAJORS = [profileFor('7.2').major, profileFor(NEWEST).major];

export function startGuestEarly(args: string[], env: NodeJS.ProcessEnv, cwd: string, progname: string): void {
  const parsed = parseAhead(args, env, cwd, progname);
  if (!parsed) return;
  const { command, mode, settled } = parsed;
  setLockDefaults(command);
  // check -r opens the image read-write (host/commands/check.ts): a read-only guest would be wasted.
  if (INSPECT_COMMANDS.has(command.name) && command.args.length === 1 && !command.options.has('repair')) startInspection(command, mode, command.name);
  // snapshot -l alone lists read-only (host/commands/snapshot.ts); -c/-d/-a open it read-write.
  else if (command.name === 'snapshot' && command.args.length === 1 && isListOnly(command)) startInspection(command, mode, 'snapshot-list');
  // A target is created only when every profile the command may end up with reads the line alike.
  else if (command.name === 'convert' && settled) startConvert(command, mode);
}

/**
 * The command line as the command will see it, and the sandbox mode. `settled`: every profile
 * the command may end up with (the installed qemu-img is probed later) parses it the same way.
 */
function parseAhead(args: string[], env: NodeJS.ProcessEnv, cwd: string, progname: string): { command: ParsedCommand; mode: SandboxMode; settled: boolean } | undefined {
  let majors: number[];
  try {
    const flag = prescanQemuVersion(args) ?? (env.INSTAR_QEMU_VERSION || undefined);
    majors = flag === undefined ? TABLE_MAJORS : [profileFor(parseQemuVersion(flag, 'the command line')).major];
  } catch {
    return undefined;
  }
  const posixlyCorrect = env.POSIXLY_CORRECT !== undefined;
  // The newest first: it is what an unprobed command line is parsed by.
  const outcomes = [...majors].sort((a, b) => b - a).map((major) => parseCommandLine(args, { progname, major, posixlyCorrect }));
  const outcome = outcomes[0];
  // A command line that stops early runs no guest (argv-stop.ts).
  if (outcome.kind !== 'run' || outcome.command.stop) return undefined;
  let mode: SandboxMode;
  try {
    mode = finishGlobals(outcome.globals, env, cwd, NEWEST).sandbox ?? 'auto';
  } catch {
    return undefined;
  }
  if (mode === 'none') return undefined;
  const settled = outcomes.every((o) => sameParse(o, outcome));
  return { command: outcome.command, mode, settled };
}

function sameParse(a: ParseOutcome, b: ParseOutcome): boolean {
  const shape = (o: ParseOutcome) => JSON.stringify(o.kind === 'run' ? { ...o, command: { ...o.command, options: [...o.command.options] } } : o);
  return shape(a) === shape(b);
}

function isListOnly(command: ParsedCommand): boolean {
  return command.options.has('list') && !['apply', 'create', 'delete'].some((action) => command.options.has(action));
}

function startInspection(command: ParsedCommand, mode: SandboxMode, op: string): void {
  let fd;
  try {
    const target = topTarget(command, command.args[0]);
    if (target.format === 'file') return;
    fd = preopenTop(target);
  } catch {
    return;
  }
  if (fd === undefined) return;
  cleanup = () => {
    discardEarlyGuests();
    closePreopened();
  };
  startEarlyGuest(op, [{ fd, role: 'input', writable: false }], { mode });
}

function startConvert(command: ParsedCommand, mode: SandboxMode): void {
  const files = earlyConvertFiles(command);
  if (!files) return;
  // As the command orders it (host/commands/convert.ts): every source opened, then the target.
  const devices: HostDevice[] = [];
  for (const spec of files.sources) {
    let fd;
    try {
      fd = preopenTop(imageTarget(spec, files.format, false));
    } catch {
      fd = undefined;
    }
    if (fd === undefined) return closePreopened();
    devices.push({ fd, role: 'input', writable: false });
  }
  const out = createEarlyTarget(files.target);
  if (out === undefined) return closePreopened();
  devices.push({ fd: out, role: 'output', writable: true });
  cleanup = () => {
    discardEarlyGuests();
    closePreopened();
    removeEarlyTarget();
  };
  const sources = devices.filter((d) => d.role === 'input').map((d) => ({ fd: d.fd, format: files.format }));
  if (startEarlyGuest('convert', devices, { mode }, copyGuestCount(sources)) === 0) finishEarlyStart();
}

/** After the command: guests nobody claimed are ended, files nobody took closed or removed. */
export function finishEarlyStart(): void {
  cleanup?.();
  cleanup = undefined;
}
