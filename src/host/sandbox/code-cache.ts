// Which file the guest's node runs. With a V8 code cache beside the bundle (made at build time,
// scripts/guest-cache.ts) it is the small loader (src/guest/loader.ts), given the bundle and the
// cache as read-only descriptors; without one, the bundle itself, as before. Whether the cache
// still fits the bundle is the loader's check: a stale one costs the plain compile, nothing else.
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** `dist/guest.cjs` → `dist/guest.v8cache`. */
export function codeCachePath(bundle: string): string {
  return join(dirname(bundle), basename(bundle).replace(/\.c?js$/, '') + '.v8cache');
}

export interface GuestCode {
  /** The script node starts: the loader, or the bundle when there is no cache. */
  entry: string;
  /** Files the loader gets as descriptors, in this order (bundle, cache); none without a cache. */
  descriptors: string[];
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

export function guestCode(bundle: string, productionBundle: string): GuestCode {
  const cache = codeCachePath(bundle);
  const loader = loaderPath(productionBundle);
  if (!loader || !existsSync(cache)) return { entry: bundle, descriptors: [] };
  return { entry: loader, descriptors: [bundle, cache] };
}
