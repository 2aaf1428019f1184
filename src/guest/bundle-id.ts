// A guest bundle's id: the build appends a hash of the bundle's text as its last line
// (scripts/guest-cache.ts), and whatever was made from the bundle (its V8 code cache, its
// startup snapshot) names that id, so that a rebuilt bundle never meets a stale one.

/** The bundle's last line names its id (a hash of what precedes it). */
export const ID_MARK = '//# instar-guest-id ';

/** The id a bundle's source (or its tail) ends with, if it has one. */
export function bundleId(source: string): string | undefined {
  const at = source.lastIndexOf(ID_MARK);
  if (at < 0) return undefined;
  return /^([0-9a-f]{16,128})\s*$/.exec(source.slice(at + ID_MARK.length))?.[1];
}
