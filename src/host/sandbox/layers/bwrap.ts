// Layer 3: bubblewrap. The guest runs in fresh namespaces (no network, its own pid space,
// uid 65534, no capabilities, no further user namespaces) with a read-only root that holds
// only node, the libraries it links and the guest bundle.
//
// Probing costs nothing on the happy path: finding the binary and node's files needs no
// spawn, and a real trial sandbox (verifyBwrap) is built only after a launch failed, to tell
// "bwrap cannot work here" from "the guest failed". The trial runs none of the guest's code,
// so a hostile guest cannot fake a bwrap failure to get relaunched with fewer layers.
import { spawnSync } from 'node:child_process';
import { findExecutable } from './prlimit.ts';
import { nodeFiles } from './node-files.ts';

export const BWRAP_CANDIDATES = ['/usr/bin/bwrap', '/bin/bwrap'];
/** Where the script node starts (the guest bundle, or its loader) appears inside the sandbox. */
export const GUEST_PATH_INSIDE = '/instar/guest.cjs';
/** Where the guest's startup snapshot appears inside the sandbox. */
export const BLOB_PATH_INSIDE = '/instar/guest.blob';

/**
 * The one file of the guest's code: a script bound by path, or a snapshot blob from a
 * descriptor the host opened after checking it (bwrap binds that very file and closes the fd).
 */
export type GuestBind = { path: string } | { fd: number };

export interface BwrapProbe {
  path: string;
  /** Files to bind read-only: [real file, path inside]. */
  binds: [string, string][];
}

let cached: BwrapProbe | string | undefined;

/** Finds bwrap and the files node needs; cached for the life of the process. */
export function probeBwrap(): BwrapProbe | string {
  cached ??= probeOnce();
  return cached;
}

/** Records that bwrap turned out not to work here (see verifyBwrap). */
export function markBwrapBroken(why: string): void {
  cached = why;
}

function probeOnce(): BwrapProbe | string {
  const path = findExecutable(BWRAP_CANDIDATES);
  if (!path) return `bwrap not found (${BWRAP_CANDIDATES.join(', ')}); install bubblewrap`;
  const binds = nodeFiles();
  if (typeof binds === 'string') return binds;
  return { path, binds };
}

/** The fixed part of the bwrap command line: namespaces, identity and the read-only root. */
function baseArgs(binds: [string, string][]): string[] {
  const args = [
    '--unshare-all', '--unshare-user', '--disable-userns', '--cap-drop', 'ALL', '--uid', '65534', '--gid', '65534',
    '--die-with-parent', '--new-session', '--clearenv',
    // No /proc: node runs without it, and the guest has no business reading it.
    '--dev', '/dev',
  ];
  for (const [from, to] of binds) args.push('--ro-bind', from, to);
  return args;
}

/** The whole bwrap prefix for one launch, ending just before the command to run. */
export function bwrapArgs(probe: BwrapProbe, guest: GuestBind, seccompFd: number | undefined): string[] {
  const args = baseArgs(probe.binds);
  if ('fd' in guest) args.push('--ro-bind-fd', String(guest.fd), BLOB_PATH_INSIDE);
  else args.push('--ro-bind', guest.path, GUEST_PATH_INSIDE);
  if (seccompFd !== undefined) args.push('--seccomp', String(seccompFd));
  // The tmpfs root read-only too: nothing in the sandbox is writable by path.
  args.push('--remount-ro', '/', '--chdir', '/', '--');
  return args;
}

/**
 * Builds a trial sandbox with the same mounts (and filter, when given) around node's dynamic
 * loader printing its version. Undefined when it works, else bwrap's own complaint.
 */
export function verifyBwrap(probe: BwrapProbe, seccomp?: Buffer): string | undefined {
  const loader = probe.binds.find(([, inside]) => /\/ld-linux[^/]*\.so/.test(inside))?.[1];
  const cmd = loader ? [loader, '--version'] : [process.execPath, '--version'];
  const args = [...baseArgs(probe.binds), ...(seccomp ? ['--seccomp', '0'] : []), '--remount-ro', '/', '--', ...cmd];
  const r = spawnSync(probe.path, args, { env: {}, input: seccomp ?? '', encoding: 'utf8', timeout: 10_000 });
  if (r.error) return `bwrap failed to run: ${r.error.message}`;
  if (r.status === 0) return undefined;
  const line = (r.stderr ?? '').split('\n').find((l) => l.trim() !== '')?.trim();
  return `bwrap cannot create a sandbox here: ${line || `exit status ${r.status}`}`;
}
