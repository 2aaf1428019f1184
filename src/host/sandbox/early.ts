// A guest started before its request is known. A sandboxed op is two Node starts in a row (the
// CLI, then the guest); the CLI can open the image a command line names and start the guest at
// once, so that the guest's Node boots while the host is still loading the command's code. The
// guest only waits on stdin: until a launch with the same argv and fds claims it, it has seen
// nothing but the fds the host chose to give it.
import type { ChildProcess } from 'node:child_process';
import type { HostDevice, RunOptions } from './run.ts';
import { planLaunch, launchKey, spawnGuest, killGuestGroup } from './launch.ts';

/** A started guest process and what happened to it before anyone talked to it. */
export interface SpawnedGuest {
  child: ChildProcess;
  ended: boolean;
  spawnError?: Error;
}

let parked: { key: string; guest: SpawnedGuest } | undefined;

/**
 * Starts the guest `op` over `devices` will need and parks it. Best effort: when anything is in
 * the way (a missing layer under --sandbox=strict, no guest bundle) nothing starts and the real
 * launch later reports it.
 */
export function startEarlyGuest(op: string, devices: HostDevice[], run: Pick<RunOptions, 'mode'>): void {
  if (run.mode === 'none') return;
  try {
    const p = planLaunch(op, devices, { mode: run.mode });
    if (run.mode === 'strict' && p.plan.missing.length > 0) return;
    discardEarlyGuest();
    parked = { key: launchKey(p, devices), guest: spawnGuest(p, devices) };
  } catch {
    // The real launch repeats every step and reports what failed.
  }
}

/** The parked guest if it was started for exactly this launch and is still waiting. */
export function claimEarlyGuest(key: string): SpawnedGuest | undefined {
  if (!parked) return undefined;
  const { key: parkedKey, guest } = parked;
  if (parkedKey !== key || guest.ended || guest.spawnError) return undefined;
  parked = undefined;
  return guest;
}

/** Ends a parked guest nobody claimed (the command failed first, or needed another launch). */
export function discardEarlyGuest(): void {
  if (!parked) return;
  const { child, ended } = parked.guest;
  parked = undefined;
  if (ended) return;
  killGuestGroup(child);
  child.stdin?.destroy();
}
