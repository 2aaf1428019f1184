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
