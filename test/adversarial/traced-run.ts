// Runs the built CLI (default, sandboxed mode) under `strace -f` and GNU time, asynchronously, so
// that many hostile images can run in parallel. strace follows every process the CLI starts
// (prlimit, bwrap, the guest); GNU time reports the largest resident set of any process in the
// tree that reaches it through wait4's rusage: the host CLI (bwrap's PID namespace hides the
// guest from it), so the guest's own peak is sampled from procfs (guest-memory.ts).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSTAR_ALIAS } from '../helpers/oracles.ts';
import { watchGuests } from './guest-memory.ts';
import { parseStrace, type TracedCall } from '../helpers/strace-log.ts';

export { parseStrace, type TracedCall };


export interface TracedRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  wallMs: number;
  /** The run outlived its wall limit and was killed (status null, signal SIGKILL). */
  timedOut: boolean;
  /** Largest resident set of the host side of the run, in KiB (GNU time %M). */
  hostRssKiB: number;
  /** Peak resident set (VmHWM) of the sandboxed guest(s), sampled, in KiB; 0 if never seen. */
  guestPeakKiB: number;
  calls: TracedCall[];
}

/** One CLI run; `wallLimitMs` kills the whole run (a hang is then reported as status null, timedOut). */
export function tracedInstar(args: string[], opts: { cwd: string; wallLimitMs: number }): Promise<TracedRun> {
  return tracedCommand([process.execPath, INSTAR_ALIAS, ...args], opts);
}

/** Any command under the same tracing (the control runs of the real qemu-img use it). */
export function tracedCommand(command: string[], opts: { cwd: string; wallLimitMs: number }): Promise<TracedRun> {
  const dir = mkdtempSync(join(tmpdir(), 'instar-adv-'));
  const log = join(dir, 'strace.log');
  const mem = join(dir, 'rss');
  const argv = ['-f', '--seccomp-bpf', '-qq', '-s', '4096', '-e', 'trace=%file,connect', '-o', log,
    '/usr/bin/time', '-f', '%M', '-o', mem, ...command];
  const started = performance.now();
  return new Promise((resolve, reject) => {
    // A fixed environment; the output profile named so that no run looks up and runs qemu-img.
    // Its own process group, killed whole at the wall limit: strace killed alone leaves the CLI
    // running with strace's seccomp filter and no tracer, where every traced call (open, stat,
    // realpath, execve) fails with ENOSYS. Seen as misleading errors ("'l4' is outside the
    // allowed paths", "guest bundle not found", a guest that ends without a result) and as
    // launches that never end (bwrap waiting for a child that failed to set up).
    const child = spawn('strace', argv, { cwd: opts.cwd, env: { PATH: '/usr/bin:/bin', LANG: 'C', INSTAR_QEMU_VERSION: '10.0' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const stopWatching = watchGuests(child.pid ?? -1);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, opts.wallLimitMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      stopWatching();
      rmSync(dir, { recursive: true, force: true });
      reject(e);
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      const guestPeakKiB = stopWatching();
      const wallMs = performance.now() - started;
      try {
        const rss = readFileSync(mem, 'utf8').split('\n').filter((l) => /^\d+$/.test(l.trim())).pop();
        // GNU time prefixes "Command exited with non-zero status N" to its output file.
        resolve({ status, signal, stdout, stderr, wallMs, timedOut, hostRssKiB: rss ? Number(rss) : NaN, guestPeakKiB, calls: parseStrace(readFileSync(log, 'utf8')) });
      } catch (e) {
        reject(e);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}

/** SIGKILL to strace's whole process group: strace, GNU time and the traced command. */
function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group has ended already
  }
}

/** Runs `jobs` with at most `width` at a time, keeping their order in the result. */
export async function pool<T>(jobs: (() => Promise<T>)[], width: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, worker));
  return out;
}
