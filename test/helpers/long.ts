// The long tier of the suite (`npm run test:long`): cases that cost minutes and repeat what a
// shorter case already covers in kind (more ciphers with the same key sizes, multi-GiB files).
// `npm test` runs the short tier only, so that CI stays well under its 20-minute budget; the long
// cases are not registered there at all (they neither run nor show as skipped).
import { test } from 'node:test';

export const LONG = process.env.INSTAR_LONG_TESTS === '1';

/** The whole list in the long tier; in the short tier only the entries `short` keeps. */
export function tiered<T>(all: readonly T[], short: (item: T) => boolean): T[] {
  return LONG ? [...all] : all.filter(short);
}

/** `test` in the long tier; in the short tier the case is not registered. */
export const longTest = (LONG ? test : () => undefined) as typeof test;
