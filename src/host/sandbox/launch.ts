// Launches the sandboxed guest for one op: layers planned (probe.ts), command line built from
// the outside in (prlimit → bwrap + seccomp → node with the permission model), request written
// to the guest's stdin, messages read from its fd 3, and a watchdog for wall-clock time. The
// guest receives file descriptors at 4, 5, …, never paths.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, realpathSync } from 'node:fs';
import { MAX_REQUEST_BYTES, type DeviceSpec, type GuestMessage, type GuestRequest, type GuestWarning } from '../../protocol/messages.ts';
import type { HostDevice, RunOptions } from './run.ts';
import { OpError, deliverStreamed } from './run.ts';
import { planLayers, describePlan, diagnoseLaunchFailure, type LayerPlan } from './probe.ts';
import { resolveLimits, type SandboxLimits } from './limits.ts';
import { defaultGuestPath, productionGuestPath } from './guest-path.ts';
import { guestCode, refuseSnapshots, type GuestCode } from './code-cache.ts';
import { sameBlob } from './snapshot.ts';
import { nodeArgs } from './layers/permission.ts';
import { prlimitArgs } from './layers/prlimit.ts';
import { bwrapArgs, BLOB_PATH_INSIDE, GUEST_PATH_INSIDE } from './layers/bwrap.ts';
import { seccompProgram } from './seccomp.ts';
import { LineSplitter, cleanGuestText, parseGuestMessage } from './guest-messages.ts';
import { deathReason } from './guest-death.ts';
import { claimEarlyGuest, type SpawnedGuest } from './early.ts';

const FIRST_DEVICE_FD = 4;
const MAX_STDERR = 64 * 1024;

export async function runSandboxed(op: string, options: Record<string, unknown>, devices: HostDevice[], run: RunOptions): Promise<unknown> {
  try {
    return await runOnce(op, options, devices, run);
  } catch (e) {
    if (e instanceof SnapshotRefused) {
      // Node ran none of the guest's code: the same op, started from the loader, is a clean retry.
      refuseSnapshots(e.message);
      run.debug?.(`sandbox: guest start: ${e.message}; relaunching from the code cache`);
      return runSandboxed(op, options, devices, run);
    }
    if (!(e instanceof LayerBroken)) throw e;
    // The trial sandbox said a layer cannot work here (and it is now recorded as missing).
    if (run.mode === 'strict') throw new OpError(`sandbox layer '${e.layer}' unavailable: ${e.why} (--sandbox=strict)`);
    run.debug?.(`sandbox: ${e.layer}: failed at launch (${e.why}); relaunching without it`);
    return runOnce(op, options, devices, run);
  }
}

/** Node refused the startup snapshot (exit 14 before any JS): another node or V8 flags. */
class SnapshotRefused extends Error {}

/**
 * How node ends, before any JS, on a --snapshot-blob it cannot use: exit 14 when it was made by
 * another node or with other V8 flags (the guest's own code never exits 14); an abort or a
 * segfault when it is damaged (measured). A crash may also be the op's own (its heap ran out;
 * node then says so): it is taken for a refused snapshot only when node said nothing of memory
 * and nothing was writable, so that a rerun never meets a half-written output. (The record's
 * identity check leaves a damaged blob to in-place edits that keep its mtime.)
 */
function snapshotRefused(e: GuestSilent, readOnly: boolean): boolean {
  if (e.status === 14) return true;
  const crashes = ['SIGABRT', 'SIGSEGV', 'SIGBUS', 'SIGILL'];
  // bwrap reports its child's death by a signal as 128 + the signal's number.
  const crashed = (e.signal !== null && crashes.includes(e.signal)) || [134, 139, 135, 132].includes(e.status ?? 0);
  return readOnly && crashed && !/out of memory|FATAL ERROR/i.test(e.stderr);
}

class LayerBroken extends Error {
  constructor(readonly layer: string, readonly why: string) {
    super(why);
  }
}

async function runOnce(op: string, options: Record<string, unknown>, devices: HostDevice[], run: RunOptions): Promise<unknown> {
  const launchPlan = planLaunch(op, devices, run);
  const { plan, limits } = launchPlan;
  for (const line of describePlan(plan)) run.debug?.(line);
  if (run.mode === 'strict' && plan.missing.length > 0) {
    const m = plan.missing[0];
    throw new OpError(`sandbox layer '${m.layer}' unavailable: ${m.why} (--sandbox=strict)`);
  }

  const request: GuestRequest = {
    op,
    options,
    devices: devices.map((d, i) => deviceSpec(d, FIRST_DEVICE_FD + i)),
  };
  const requestText = JSON.stringify(request);
  if (Buffer.byteLength(requestText) > MAX_REQUEST_BYTES) throw new OpError('request for the sandboxed guest is too large');

  run.debug?.(`sandbox: limits: data ${limits.memoryBytes} B, cpu ${limits.cpuSeconds} s, wall ${limits.wallMs} ms, fsize ${limits.outputBytes} B, nofile ${limits.openFiles}`);
  const early = claimEarlyGuest(launchKey(launchPlan, devices));
  if (early) run.debug?.('sandbox: guest started early (before the command had loaded)');
  const guest = early ?? spawnGuest(launchPlan, devices);
  try {
    return await launch(guest, requestText, devices, limits, run);
  } catch (e) {
    if (e instanceof GuestSilent) {
      if (launchPlan.code.start === 'snapshot' && snapshotRefused(e, !devices.some((d) => d.writable))) throw new SnapshotRefused(`node refused the snapshot ${launchPlan.code.entry}`);
      const broken = diagnoseLaunchFailure(plan);
      if (broken) throw new LayerBroken(broken.layer, broken.why);
      throw new OpError(e.message);
    }
    throw e;
  }
}

/** Everything a launch needs that does not depend on the request: layers, limits, argv. */
export interface LaunchPlan {
  plan: LayerPlan;
  limits: SandboxLimits;
  argv: string[];
  seccompFd?: number;
  /** What node runs, and the files (bundle, code cache) handed to it as descriptors. */
  code: GuestCode;
}

export function planLaunch(op: string, devices: readonly HostDevice[], run: RunOptions): LaunchPlan {
  const plan = planLayers(run.disableLayers);
  const bundle = run.guestPath ?? defaultGuestPath();
  if (!existsSync(bundle)) throw new OpError(`guest bundle not found at ${bundle} (run npm run build)`);
  const limits = resolveLimits(op, devices, run.limits);
  const seccompFd = plan.seccomp ? FIRST_DEVICE_FD + devices.length : undefined;
  const code = guestCode(realpathSync(bundle), productionGuestPath(), nodeArgs('', limits, false), plan.bwrap !== undefined);
  if (code.passedOver) run.debug?.(`sandbox: guest start: no snapshot (${code.passedOver})`);
  run.debug?.(`sandbox: guest start: ${code.start} (${code.start === 'code cache' ? code.descriptors.join(', ') : code.entry})`);
  const firstCodeFd = FIRST_DEVICE_FD + devices.length + (seccompFd === undefined ? 0 : 1);
  return { plan, limits, argv: commandLine(plan, code, firstCodeFd, limits, seccompFd), seccompFd, code };
}

/**
 * Two launches are interchangeable when the same argv gets the same host fds open on the same
 * files: a number closed and reused for another file (convert's early target, removed and
 * created again) must not hand a parked guest the old one.
 */
export function launchKey(p: LaunchPlan, devices: readonly HostDevice[]): string {
  return JSON.stringify([p.argv, devices.map((d) => fdIdentity(d.fd)), p.seccompFd ?? -1]);
}

function fdIdentity(fd: number): string {
  try {
    const st = fstatSync(fd, { bigint: true });
    return `${fd}:${st.dev}:${st.ino}`;
  } catch {
    return `${fd}:closed`;
  }
}

/**
 * Starts the guest process: it boots Node and then waits for its request on stdin, so it can be
 * started before the request is known (early.ts).
 */
export function spawnGuest(p: LaunchPlan, devices: readonly HostDevice[]): SpawnedGuest {
  // stdin: request; stdout: unused; stderr: captured (bounded) for diagnosis; fd 3: messages;
  // then the devices, then (with seccomp) the pipe bwrap reads the filter from, then the bundle
  // and its code cache, read-only, for the loader (which closes them before the op runs), or
  // the snapshot blob for bwrap to bind (bwrap closes it).
  const stdio: ('pipe' | 'ignore' | number)[] = ['pipe', 'ignore', 'pipe', 'pipe', ...devices.map((d) => d.fd)];
  if (p.seccompFd !== undefined) stdio.push('pipe');
  const seccompIndex = stdio.length - 1;
  const codeFds = openCodeFiles(p.code);
  let child: ChildProcess;
  try {
    child = spawn(p.argv[0], p.argv.slice(1), {
      stdio: [...stdio, ...codeFds],
      env: {},
      // Unwritable even for root (nothing can be created in procfs), so nothing lands in the cwd.
      cwd: existsSync('/proc/self') ? '/proc' : '/',
      // Its own process group (and session): the watchdog kills the whole group.
      detached: true,
    });
  } finally {
    for (const fd of codeFds) closeSync(fd);
  }
  const guest: SpawnedGuest = { child, ended: false };
  child.on('error', (e) => (guest.spawnError = e));
  child.on('close', () => (guest.ended = true));
  const ignore = () => {};
  child.stdin!.on('error', ignore);
  if (p.seccompFd !== undefined) {
    const pipe = child.stdio[seccompIndex] as NodeJS.WritableStream;
    pipe.on('error', ignore);
    pipe.end(seccompProgram());
  }
  return guest;
}

/**
 * The loader's files, opened read-only. A cache gone since planLaunch (deleted by hand) is
 * handed over as an empty file, which the loader takes for a stale cache and ignores.
 */
function openCodeFiles(code: GuestCode): number[] {
  if (code.start === 'snapshot') return code.descriptors.map(() => openCheckedBlob(code));
  const fds: number[] = [];
  try {
    for (const [i, file] of code.descriptors.entries()) {
      try {
        fds.push(openSync(file, 'r'));
      } catch (e) {
        if (i === 0) throw new OpError(`cannot read the guest bundle: ${(e as Error).message}`);
        fds.push(openSync('/dev/null', 'r'));
      }
    }
  } catch (e) {
    for (const fd of fds) closeSync(fd);
    throw e;
  }
  return fds;
}

/**
 * The blob, opened, and still the file planLaunch checked: bwrap binds this descriptor, so node
 * reads exactly what its record vouched for (a build may rename another blob in meanwhile).
 */
function openCheckedBlob(code: GuestCode): number {
  let fd: number;
  try {
    fd = openSync(code.entry, 'r');
  } catch (e) {
    throw new SnapshotRefused(`snapshot ${code.entry} unreadable: ${(e as NodeJS.ErrnoException).code}`);
  }
  if (!sameBlob(fstatSync(fd, { bigint: true }), code.blob)) {
    closeSync(fd);
    throw new SnapshotRefused(`snapshot ${code.entry} replaced since it was checked`);
  }
  return fd;
}

/** Kills the guest's whole process group (prlimit, bwrap and node): it runs detached, in its own. */
export function killGuestGroup(child: ChildProcess): void {
  try {
    if (child.pid) process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

/** The guest ended without a single message: maybe it never started (see diagnoseLaunchFailure). */
class GuestSilent extends OpError {
  constructor(message: string, readonly status: number | null, readonly signal: NodeJS.Signals | null, readonly stderr: string) {
    super(message);
  }
}

/** The full argv, outermost layer first; the loader's descriptors are numbered from `firstCodeFd`. */
function commandLine(plan: LayerPlan, code: GuestCode, firstCodeFd: number, limits: SandboxLimits, seccompFd: number | undefined): string[] {
  const snapshot = code.start === 'snapshot';
  const entry = plan.bwrap ? (snapshot ? BLOB_PATH_INSIDE : GUEST_PATH_INSIDE) : code.entry;
  const codeFds = code.descriptors.map((_, i) => String(firstCodeFd + i));
  // Node reads a snapshot before its permission model starts: the guest then may read no file.
  const node = snapshot ? [...nodeArgs('', limits, plan.permission), '--snapshot-blob', entry] : [...nodeArgs(entry, limits, plan.permission), entry, ...codeFds];
  let argv = [process.execPath, ...node];
  if (plan.bwrap) argv = [plan.bwrap.path, ...bwrapArgs(plan.bwrap, snapshot ? { fd: firstCodeFd } : { path: code.entry }, seccompFd), ...argv];
  if (plan.prlimit) argv = [plan.prlimit, ...prlimitArgs(limits), ...argv];
  return argv;
}

interface Outcome {
  result?: { value: unknown; warnings?: GuestWarning[] };
  error?: string;
  errorWarnings?: GuestWarning[];
  violation?: string;
  /** The host killed the guest after its result (its exit status then says nothing). */
  endedByHost?: boolean;
  /** Any message at all arrived (so the guest did start). */
  spoke: boolean;
  timedOut: boolean;
  stderr: string;
}

/** What the guest is told of a device: the host's fields that are set, named one by one (a caller's object may carry more, a path say, which the guest is not to see). */
function deviceSpec(d: HostDevice, fd: number): DeviceSpec {
  const spec: DeviceSpec = { fd, role: d.role, writable: d.writable };
  if (d.name !== undefined) spec.name = d.name;
  if (d.referrer !== undefined) spec.referrer = d.referrer;
  if (d.dataRuns !== undefined) spec.dataRuns = d.dataRuns;
  if (d.dataRunsEnd !== undefined) spec.dataRunsEnd = d.dataRunsEnd;
  if (d.dataSpans !== undefined) spec.dataSpans = d.dataSpans;
  return spec;
}

function launch(guest: SpawnedGuest, requestText: string, devices: HostDevice[], limits: SandboxLimits, run: RunOptions): Promise<unknown> {
  const { child } = guest;
  const outcome: Outcome = { spoke: false, timedOut: false, stderr: '' };
  const readOnly = !devices.some((d) => d.writable);
  let settled = false;
  let finishEarly: ((value: unknown) => void) | undefined;

  const killGroup = () => killGuestGroup(child);
  const watchdog = setTimeout(() => {
    outcome.timedOut = true;
    killGroup();
  }, limits.wallMs);

  child.stdin!.end(requestText);
  child.stderr!.on('data', (chunk: Buffer) => {
    if (outcome.stderr.length < MAX_STDERR) outcome.stderr += chunk.toString('utf8', 0, Math.min(chunk.length, MAX_STDERR - outcome.stderr.length));
  });

  const splitter = new LineSplitter();
  const messages = child.stdio[3] as NodeJS.ReadableStream;
  const violate = (why: string) => {
    if (!outcome.violation) outcome.violation = why;
    killGroup();
  };
  messages.on('data', (chunk: Buffer) => {
    if (outcome.violation) return;
    outcome.spoke = true;
    const lines = splitter.push(chunk);
    if (!Array.isArray(lines)) return violate('message too large');
    for (const line of lines) {
      const msg = parseGuestMessage(line);
      if (typeof msg === 'string') return violate(msg);
      handle(msg);
    }
  });
  const handle = (msg: GuestMessage) => {
    if (outcome.result || outcome.error !== undefined) return violate('message after the end');
    if (deliverStreamed(msg, run)) return;
    if (msg.type === 'result') {
      outcome.result = { value: msg.value, warnings: msg.warnings };
      // With nothing writable, nothing the guest does after its result matters: take the
      // result and end the guest now instead of waiting ~10 ms for node and bwrap to tear down.
      if (readOnly) finishEarly?.(msg.value);
      // With an output, the guest is ended too (its writes are done: it sends its result after
      // them), and the host waits for its exit, so that no write can follow the host's fsync.
      else {
        outcome.endedByHost = true;
        killGroup();
      }
    }
    else if (msg.type === 'error') {
      outcome.error = msg.message;
      outcome.errorWarnings = msg.warnings;
    }
  };

  return new Promise((resolve, reject) => {
    const succeed = (value: unknown) => {
      if (outcome.result?.warnings) run.onWarnings?.(outcome.result.warnings);
      resolve(value);
    };
    finishEarly = (value) => {
      settled = true;
      clearTimeout(watchdog);
      killGroup();
      succeed(value);
    };
    const failedToStart = (e: Error) => {
      clearTimeout(watchdog);
      reject(new OpError(`cannot start the sandboxed guest: ${e.message}`));
    };
    if (guest.spawnError) return failedToStart(guest.spawnError);
    child.on('error', failedToStart);
    child.on('close', (code, signal) => {
      clearTimeout(watchdog);
      if (settled) return;
      for (const line of outcome.stderr.split('\n').filter((l) => l.trim()).slice(0, 20)) run.debug?.(`guest stderr: ${cleanGuestText(line, 300)}`);
      if (outcome.violation) return reject(new OpError(`guest process killed: protocol violation (${outcome.violation})`));
      if (outcome.timedOut) return reject(new OpError(`guest process killed: time limit exceeded (${limits.wallMs / 1000} s)`));
      if (outcome.error !== undefined) return reject(new OpError(outcome.error, outcome.errorWarnings));
      if (outcome.result && (code === 0 || outcome.endedByHost) && splitter.leftover === 0) return succeed(outcome.result.value);
      const reason = deathReason(code, signal, outcome.stderr, !!outcome.result);
      reject(outcome.result || outcome.spoke ? new OpError(reason) : new GuestSilent(reason, code, signal, outcome.stderr));
    });
  });
}
