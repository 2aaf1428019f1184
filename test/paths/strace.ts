// Runs a command under strace and returns the file-system and network calls it made, so tests can
// prove that a refused file was never opened (nor stat'ed, nor connected to).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { parseStrace, type TracedCall } from '../helpers/strace-log.ts';

export type { TracedCall };


export interface Traced {
  status: number | null;
  stdout: string;
  stderr: string;
  calls: TracedCall[];
}

/** strace -f over `argv`; a missing strace fails the test (never a skip). */
export function straced(argv: string[], opts: { cwd: string; timeoutMs?: number }): Traced {
  const dir = mkdtempSync(join(tmpdir(), 'instar-strace-'));
  const log = join(dir, 'log');
  try {
    const r = spawnSync('strace', ['-f', '-s', '8192', '-e', 'trace=%file,%network', '-o', log, ...argv], {
      cwd: opts.cwd, encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000,
    });
    if (r.error) throw r.error;
    const calls = parseStrace(readFileSync(log, 'utf8'));
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, calls };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** True for calls that do not follow a symlink in their last component (lstat, readlink, O_NOFOLLOW). */
function noFollow(call: TracedCall): boolean {
  return /^(lstat|readlink)/.test(call.syscall) || call.line.includes('AT_SYMLINK_NOFOLLOW') || call.line.includes('O_NOFOLLOW');
}

function realpathOr(path: string, fallback: string, cache?: Map<string, string | null>): string {
  let real = cache?.get(path);
  if (real === undefined) {
    try {
      real = realpathSync.native(path);
    } catch {
      real = null;
    }
    cache?.set(path, real);
  }
  return real ?? fallback;
}

/**
 * Where a call's path leads, resolved now as the kernel resolved it then (the files are still
 * there): through every symlink, except the last component of a call that does not follow it.
 * `cache` (path -> its realpath, null when none) serves many calls checked while nothing changes.
 */
export function resolvedPath(call: TracedCall, cwd: string, cache?: Map<string, string | null>): string | undefined {
  if (call.path === undefined || call.path === '') return undefined;
  const raw = call.path.startsWith('/') ? call.path : `${cwd}/${call.path}`;
  const lexical = resolve(raw);
  const last = basename(raw);
  if (noFollow(call) && last !== '..' && last !== '.' && raw !== '/') {
    return join(realpathOr(dirname(raw), dirname(lexical), cache), last);
  }
  return realpathOr(raw, lexical, cache);
}

/** Calls whose path names `target` or something under it, as spelled or after resolution. */
export function callsNaming(calls: TracedCall[], target: string, cwd: string): TracedCall[] {
  const targets = [target, realpathOr(target, target)];
  const under = (p: string | undefined) => p !== undefined && targets.some((t) => p === t || p.startsWith(t + '/'));
  return calls.filter((c) => c.path !== undefined && c.path !== '' && (under(resolve(cwd, c.path)) || under(resolvedPath(c, cwd))));
}

/** IP sockets opened or connected (tsx and Node talk to themselves over AF_UNIX, which is fine). */
export function networkCalls(calls: TracedCall[]): TracedCall[] {
  return calls.filter((c) => ['connect', 'socket', 'sendto', 'sendmsg', 'bind'].includes(c.syscall) && c.line.includes('AF_INET'));
}
