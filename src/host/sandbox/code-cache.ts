// Which code the guest's node starts from, fastest first:
// - 'snapshot': a V8 startup snapshot of the bundle (snapshot.ts), when one was made by this
//   node with this launch's flags from the bundle now there;
// - 'code cache': the small loader (src/guest/loader.ts), given the bundle and its V8 code cache
//   as read-only descriptors (a stale cache is the loader's own check: it costs the plain
//   compile, nothing else);
// - 'plain': the bundle itself, as node would run any script.
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { usableSnapshot, type BlobIdentity } from './snapshot.ts';

/** `dist/guest.cjs` → `dist/guest.v8cache`. */
export function codeCachePath(bundle: string): string {
  return join(dirname(bundle), basename(bundle).replace(/\.c?js$/, '') + '.v8cache');
}

export type GuestStart = 'snapshot' | 'code cache' | 'plain';

export interface GuestCode {
  start: GuestStart;
  /** The script node starts (the loader or the bundle), or the snapshot blob. */
  entry: string;
  /**
   * Files handed over as read-only descriptors, in this order: the bundle and its cache (for
   * the loader), or the blob (for bwrap to bind, which closes it); none otherwise.
   */
  descriptors: string[];
  /** The snapshot blob's identity as its record gave it (checked again once it is open). */
  blob?: BlobIdentity;
  /** Why a faster start was not taken (for --debug). */
  passedOver?: string;
}

let loaderFound: string | null | undefined;

/** The loader sits beside the production bundle (dist/guest-loader.cjs). */
function loaderPath(productionBundle: string): string | undefined {
  if (loaderFound === undefined) {
    const candidate = join(dirname(productionBundle), 'guest-loader.cjs');
    loaderFound = existsSync(candidate) ? candidate : null;
  }
  return loaderFound ?? undefined;
}

/** Set once node refused a blob this process vouched for: no further launch tries one. */
let snapshotsRefused: string | undefined;

export function refuseSnapshots(why: string): void {
  snapshotsRefused = why;
}

/**
 * @param flags node's arguments for this launch, the permission flags aside (what the snapshot
 *   record must name exactly)
 * @param bound whether bwrap binds the blob from a descriptor (else node gets its path)
 */
export function guestCode(bundle: string, productionBundle: string, flags: readonly string[], bound: boolean): GuestCode {
  const snapshot = snapshotsRefused ? { why: snapshotsRefused } : usableSnapshot(bundle, flags);
  if ('blob' in snapshot) return { start: 'snapshot', entry: snapshot.blob, descriptors: bound ? [snapshot.blob] : [], blob: snapshot.identity };
  const cache = codeCachePath(bundle);
  const loader = loaderPath(productionBundle);
  if (!loader || !existsSync(cache)) return { start: 'plain', entry: bundle, descriptors: [], passedOver: snapshot.why };
  return { start: 'code cache', entry: loader, descriptors: [bundle, cache], passedOver: snapshot.why };
}
