// Guests started before their request is known. A sandboxed op is two Node starts in a row (the
// CLI, then the guest); the CLI can open the files a command line names and start the guests at
// once, so that their Node boots while the host is still loading the command's code. A guest
// only waits on stdin: until a launch with the same argv and fds claims it, it has seen nothing
// but the fds the host chose to give it. Several may be parked (convert's copy guests, which
// share one key); each launch claims one.
import type { ChildProcess } from 'node:child_process';
import type { HostDevice, RunOptions } from './run.ts';
import { planLaunch, launchKey, spawnGuest, killGuestGroup } from './launch.ts';

/** A started guest process and what happened to it before anyone talked to it. */
export interface SpawnedGuest {
  child: ChildProcess;
  ended: boolean;
  spawnError?: Error;
}

const parked: { key: string; guest: SpawnedGuest }[] = [];

/**
 * Starts `count` guests as `op` over `devices` will need them and parks them; returns how many
 * started. Best effort: when anything is in the way (a missing layer under --sandbox=strict, no
 * guest bundle) nothing starts and the real launch later reports it.
 */
export function startEarlyGuest(op: string, devices: HostDevice[], run: Pick<RunOptions, 'mode'>, count = 1): number {
  if (run.mode === 'none') return 0;
  let started = 0;
  try {
    const p = planLaunch(op, devices, { mode: run.mode });
    if (run.mode === 'strict' && p.plan.missing.length > 0) return 0;
    const key = launchKey(p, devices);
    for (; started < count; started++) parked.push({ key, guest: spawnGuest(p, devices) });
  } catch {
    // The real launch repeats every step and reports what failed.
  }
  return started;
}

/** A parked guest started for exactly this launch and still waiting, taken off the list. */
export function claimEarlyGuest(key: string): SpawnedGuest | undefined {
  const i = parked.findIndex((p) => p.key === key && !p.guest.ended && !p.guest.spawnError);
  if (i < 0) return undefined;
  return parked.splice(i, 1)[0].guest;
}

/** How many guests are parked now (tests: which command lines start guests early). */
export function parkedGuestCount(): number {
  return parked.length;
}

/** Ends every parked guest nobody claimed (the command failed first, or needed other launches). */
export function discardEarlyGuests(): void {
  for (const { guest } of parked.splice(0)) {
    if (guest.ended) continue;
    killGuestGroup(guest.child);
    guest.child.stdin?.destroy();
  }
}
