// Where the guest bundle is. The CLI and library bundles sit in dist/ beside guest.cjs, their
// split-off chunks in dist/chunks/ (this code lands in one of those); when running from source (tests under tsx) this file is src/host/sandbox/, three levels down
// from the package root. The guest is always the built bundle, never the sources.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function defaultGuestPath(): string {
  // For the CLI tests only (a guest that plays an exploited parser). Whoever sets this could
  // as well set NODE_OPTIONS, so it opens nothing new.
  const testGuest = process.env.INSTAR_TEST_GUEST;
  if (testGuest) return testGuest;
  return productionGuestPath();
}

/** dist/guest.cjs, whatever the tests chose to run instead. */
export function productionGuestPath(): string {
  if (cached) return cached;
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'guest.cjs'), join(here, '..', 'guest.cjs'), join(here, '..', '..', '..', 'dist', 'guest.cjs')];
  cached = candidates.find((p) => existsSync(p)) ?? candidates[candidates.length - 1];
  return cached;
}
