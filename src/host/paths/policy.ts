/**
 * The policy every path an image names must pass before the host opens it (DESIGN.md §1,
 * "Files an image names"; user documentation in docs/path-policy.md). Implementation: resolve.ts
 * (openReferenced) over walk.ts (the symlink walk) and combine.ts (qemu's naming rules).
 *
 * Where the allowlist comes from (the CLI builds PathPolicy.allow; order does not matter):
 * - every `--allow-path DIR` option (repeatable), and
 * - the environment variable INSTAR_ALLOW_PATH: directories separated by ':' (empty entries are
 *   ignored; parse it with allowFromEnv below).
 * These entries EXTEND the default root, never replace it. The default root is the directory of
 * the top image (the one given on the command line, as spelled: "vm.qcow2" → ".", "d/vm.qcow2" →
 * "d"), and it stays the root for the whole chain: a backing file in "base/" may not name files in
 * "base/.." just because it lives deeper. Entries are resolved against the current directory and
 * through their own symlinks once (they are trusted; the user typed them); entries that do not
 * exist allow nothing.
 */
export interface PathPolicy {
  /** Extra allowed directories (--allow-path and INSTAR_ALLOW_PATH); the top image's directory is always allowed. */
  allow: string[];
  /** Longest backing chain followed: how many backing files one chain may open (16 by default). */
  maxDepth: number;
}

export const DEFAULT_MAX_DEPTH = 16;

/** The environment variable holding extra allowed directories, ':'-separated. */
export const ALLOW_PATH_ENV = 'INSTAR_ALLOW_PATH';

/** Parses INSTAR_ALLOW_PATH ("dir1:dir2"); empty entries are dropped. */
export function allowFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env[ALLOW_PATH_ENV] ?? '').split(':').filter((entry) => entry !== '');
}

/** A file the host opened after the policy allowed it; the caller owns (and closes) `fd`. */
export interface OpenedReference {
  /** Opened O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_NOCTTY; verified to be the regular file the walk found. */
  fd: number;
  /** The path as qemu would spell it (combine.ts referencedPath); what messages and `info` show. */
  path: string;
  /** The symlink-free absolute path that was opened. */
  resolved: string;
  /** "dev:ino" of the opened file (the loop-detection key). */
  id: string;
}

/** What a refusal is about, for callers that word some cases as qemu-img does (e.g. loops). */
export type RefusalKind =
  | 'protocol' | 'bad-name' | 'outside' | 'special-file' | 'not-regular' | 'loop' | 'depth' | 'race';

/**
 * Raised when the policy refuses a name. `message` is the one-line text for the user, already
 * prefixed as qemu-img would for the role ("Could not open backing file: ..."); `reason` is the same
 * without that prefix.
 */
export class PathRefusedError extends Error {
  readonly reason: string;
  readonly kind: RefusalKind;
  constructor(message: string, kind: RefusalKind = 'outside', reason: string = message) {
    super(message);
    this.name = 'PathRefusedError';
    this.kind = kind;
    this.reason = reason;
  }
}

/**
 * Raised when an allowed name cannot be opened (missing, permission denied …). Worded as qemu-img
 * words it: `message` = role prefix + `reason`, `reason` = "Could not open 'd/b.qcow2': No such
 * file or directory"; `code` is the errno name.
 */
export class ReferenceOpenError extends Error {
  readonly reason: string;
  readonly code: string;
  constructor(message: string, reason: string, code: string) {
    super(message);
    this.name = 'ReferenceOpenError';
    this.reason = reason;
    this.code = code;
  }
}

/**
 * Tracks one chain walk. Create it with startChain (resolve.ts), which records the top image.
 * `visited` holds "dev:ino" of every image of the chain (top and backing files); `depth` counts the
 * backing files opened so far; `top` is the image given on the command line (its directory is the
 * default root). If `top` is absent, the first referrer passed to openReferenced becomes it.
 */
export interface ChainState {
  visited: Set<string>;
  depth: number;
  top?: string;
}
