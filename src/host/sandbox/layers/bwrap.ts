// Layer 3: bubblewrap. The guest runs in fresh namespaces (no network, its own pid space,
// uid 65534, no capabilities) with a root that holds only node, the libraries it links and
// the guest bundle, all read-only.
import { spawnSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { findExecutable } from './prlimit.ts';

export const BWRAP_CANDIDATES = ['/usr/bin/bwrap', '/bin/bwrap'];
/** Where the guest bundle appears inside the sandbox. */
export const GUEST_PATH_INSIDE = '/instar/guest.js';

export interface BwrapProbe {
  path: string;
  /** Files to bind read-only: [real file, path inside]. */
  binds: [string, string][];
}

/**
 * The shared objects node loads, as the dynamic loader itself lists them (a ~2 ms run of
 * node under LD_TRACE_LOADED_OBJECTS, which maps but never starts it).
 */
function nodeLibraries(): string[] | string {
  const r = spawnSync(process.execPath, [], { env: { LD_TRACE_LOADED_OBJECTS: '1' }, encoding: 'utf8', timeout: 10_000 });
  if (r.error) return `cannot list node's libraries: ${r.error.message}`;
  const libs: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /=>\s+(\/\S+)\s+\(/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
    else if (/=>\s+not found/.test(line)) return `node's library ${line.trim()}`;
  }
  return libs;
}

function resolveBinds(): [string, string][] | string {
  const libs = nodeLibraries();
  if (typeof libs === 'string') return libs;
  const binds: [string, string][] = [];
  try {
    for (const p of [process.execPath, ...libs]) binds.push([realpathSync(p), p]);
  } catch (e) {
    return `cannot resolve node's files: ${(e as Error).message}`;
  }
  return binds;
}

/** The fixed part of the bwrap command line: namespaces, identity and the read-only root. */
export function bwrapBaseArgs(binds: [string, string][]): string[] {
  const args = [
    '--unshare-all', '--unshare-user', '--disable-userns', '--cap-drop', 'ALL', '--uid', '65534', '--gid', '65534',
    '--die-with-parent', '--new-session', '--clearenv',
    // No /proc: node runs without it, and the guest has no business reading it.
    '--dev', '/dev',
  ];
  for (const [from, to] of binds) args.push('--ro-bind', from, to);
  return args;
}

let cached: BwrapProbe | string | undefined;

/** Finds bwrap and checks that it can build a sandbox here (user namespaces may be off). */
export function probeBwrap(): BwrapProbe | string {
  if (cached !== undefined) return cached;
  cached = probeOnce();
  return cached;
}

function probeOnce(): BwrapProbe | string {
  const path = findExecutable(BWRAP_CANDIDATES);
  if (!path) return `bwrap not found (${BWRAP_CANDIDATES.join(', ')}); install bubblewrap`;
  const binds = resolveBinds();
  if (typeof binds === 'string') return binds;
  // A real sandbox with the same mounts, running the dynamic loader's --version: cheap, and it
  // fails the same way the guest launch would (no user namespaces, missing files).
  const loader = binds.find(([, inside]) => /\/ld-linux[^/]*\.so/.test(inside));
  const probeCmd = loader ? [loader[1], '--version'] : [process.execPath, '--version'];
  const r = spawnSync(path, [...bwrapBaseArgs(binds), '--remount-ro', '/', ...probeCmd], { env: {}, encoding: 'utf8', timeout: 10_000 });
  if (r.error) return `bwrap failed to run: ${r.error.message}`;
  if (r.status !== 0) return `bwrap cannot create a sandbox here: ${firstLine(r.stderr) || `exit status ${r.status}`}`;
  return { path, binds };
}

function firstLine(s: string): string {
  return (s ?? '').split('\n').find((l) => l.trim() !== '')?.trim() ?? '';
}

/** The whole bwrap prefix for one launch, ending just before the command to run. */
export function bwrapArgs(probe: BwrapProbe, guestBundle: string, seccompFd: number | undefined): string[] {
  const args = bwrapBaseArgs(probe.binds);
  args.push('--ro-bind', guestBundle, GUEST_PATH_INSIDE);
  if (seccompFd !== undefined) args.push('--seccomp', String(seccompFd));
  // The tmpfs root read-only too: nothing in the sandbox is writable by path.
  args.push('--remount-ro', '/', '--chdir', '/', '--');
  return args;
}
