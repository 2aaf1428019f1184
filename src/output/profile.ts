/**
 * A qemu-img version profile: what changes in output between versions (DESIGN.md §3).
 * Boundaries measured over qemu releases; 7.2 and 10.0 are verified against real binaries.
 */
export interface Profile {
  major: number;
  minor: number;
  /** "Child node '/file'" section and JSON `children` (8.0+). */
  childNodes: boolean;
  /** `dirty-flag` in info, `present` in map (6.1+). */
  dirtyFlag: boolean;
  /** map JSON `compressed` (8.2+). */
  mapCompressed: boolean;
  /** Snapshot table headers VM_SIZE / VM_CLOCK with underscores (9.0+). */
  snapshotUnderscores: boolean;
  /** VHD virtual size taken from current_size regardless of creator (10.0+). */
  vhdCurrentSize: boolean;
  /**
   * qemu-img's reworked option errors (10.0+; 7.2 verified old, 10.0 new): --output is checked while
   * options are parsed ("--output expects 'human' or 'json' not 'X'") and usage errors end in
   * "Try 'qemu-img CMD --help' for more info"; before, "--output must be used with human or json as
   * argument." came after the file name check and "Try 'qemu-img --help' for more information".
   */
  newUsageErrors: boolean;
}

export const NEWEST = '10.0';

export function profileFor(version: string): Profile {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) throw new Error(`invalid qemu version '${version}'`);
  const major = Number(m[1]);
  const minor = Number(m[2]);
  const atLeast = (a: number, b: number) => major > a || (major === a && minor >= b);
  return {
    major,
    minor,
    childNodes: atLeast(8, 0),
    dirtyFlag: atLeast(6, 1),
    mapCompressed: atLeast(8, 2),
    snapshotUnderscores: atLeast(9, 0),
    vhdCurrentSize: atLeast(10, 0),
    newUsageErrors: atLeast(10, 0),
  };
}
