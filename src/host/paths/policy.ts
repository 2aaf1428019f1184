/**
 * The policy every path an image names must pass before the host opens it (DESIGN.md §1,
 * "Files an image names"). Implementation: see resolve.ts in this folder.
 */
export interface PathPolicy {
  /** Directories whose trees may be opened; empty = the referring image's own directory. */
  allow: string[];
  /** Longest backing chain followed. */
  maxDepth: number;
}

export const DEFAULT_MAX_DEPTH = 16;

/** A file the host opened after the policy allowed it. */
export interface OpenedReference {
  fd: number;
  /** The path as qemu would spell it (combinePath of referrer and name). */
  path: string;
}

/** Raised when the policy refuses a name; `message` is the one-line reason for the user. */
export class PathRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PathRefusedError';
  }
}

/** Tracks one chain walk: files already visited (device+inode) and the depth reached. */
export interface ChainState {
  visited: Set<string>;
  depth: number;
}
