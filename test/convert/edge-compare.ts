// The comparison the edge-* convert tests share: one command line run by both qemu-img oracles
// and by instar (default sandbox and in-process), each in a directory of its own with its own
// target prepared the same way; stdout, stderr, exit status and the file left at the target
// (absent, or size, allocated blocks and a digest) must all be equal. The in-process run is the
// CLI's runCommandLine in this process (as the built CLI runs it with --sandbox=none) rather than
// a launch of the built CLI, as in differential/harness.ts; the long tier and INSTAR_TEST_CLI=1
// launch the built CLI for it. The short tier runs the sandboxed CLI under 10.0 only: the version
// changes only what the host words (the same host code in both modes), which the in-process runs
// check under both versions; the sandboxed run adds the guests' transport, which no version changes.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu, VERSIONS, type RunResult } from '../helpers/oracles.ts';
import { runInstarMode, tierModes } from './in-process-cli.ts';

/** The file left at `path`: absent, or its size, allocated 512-byte blocks and a digest of its bytes. */
export function leftAt(path: string): string {
  if (!existsSync(path)) return 'absent';
  const st = statSync(path);
  return `${st.size} bytes, ${st.blocks} blocks, ${digest(path)}`;
}

/** sha256 of a file read in 4 MiB pieces (targets may pass the 2 GiB a Buffer can hold). */
function digest(path: string): string {
  const hash = createHash('sha256');
  const buf = Buffer.alloc(4 * 1024 * 1024);
  const fd = openSync(path, 'r');
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex').slice(0, 16);
}

export interface EdgeCase {
  /** Directory holding the sources; each run happens in a subdirectory of it. */
  dir: string;
  /** Everything after `convert` but the target; sources are named relative to `dir`. */
  args: (string | { source: string })[];
  /** Puts what should be at the target's path before the command (nothing by default). */
  prepare?: (target: string) => void;
  /** Sandbox modes to run instar in; by default both (the short tier: in-process-cli.ts tierModes). */
  sandboxes?: string[][];
  /**
   * Allocated 512-byte blocks the target may differ by: the file system's own extent-tree blocks
   * count in st_blocks, and a target written by two guests at once has more extents than qemu's.
   */
  blockSlack?: number;
}

/** Whether two leftAt answers agree, allocated blocks within `slack`. */
function sameLeft(a: string, b: string, slack: number): boolean {
  if (slack === 0 || a === b) return a === b;
  const parse = (x: string) => /^(\d+) bytes, (\d+) blocks, (\w+)$/.exec(x);
  const [pa, pb] = [parse(a), parse(b)];
  return !!pa && !!pb && pa[1] === pb[1] && pa[3] === pb[3] && Math.abs(Number(pa[2]) - Number(pb[2])) <= slack;
}

/** Runs the case with both oracles and instar and asserts the same outcome. */
export async function assertSameConvert(c: EdgeCase): Promise<void> {
  await sameConvert(c);
}

/** As assertSameConvert, returning qemu 10.0's outcome (for tests that also pin what qemu does). */
export async function sameConvert(c: EdgeCase): Promise<{ result: RunResult; left: string }> {
  let last: { result: RunResult; left: string } | undefined;
  for (const version of VERSIONS) {
    const sandboxes = c.sandboxes ?? tierModes(version);
    const args = ['convert', ...c.args.map((a) => (typeof a === 'string' ? a : `../${a.source}`)), 't.raw'];
    const label = `${version}: ${args.join(' ')}`;
    const run = async (who: string, go: (cwd: string) => RunResult | Promise<RunResult>): Promise<{ result: RunResult; left: string }> => {
      const cwd = join(c.dir, `${who}-${version}`);
      mkdirSync(cwd, { recursive: true });
      const target = join(cwd, 't.raw');
      rmSync(target, { force: true });
      c.prepare?.(target);
      const result = await go(cwd);
      const left = leftAt(target);
      rmSync(target, { force: true });
      return { result, left };
    };
    const expected = await run('q', (cwd) => runQemu(version, args, { cwd, timeoutMs: 60_000 }));
    for (const sandbox of sandboxes) {
      const actual = await run('i', (cwd) => runInstarMode([...args, '--qemu-version', version], sandbox, cwd));
      const l = `${label} ${sandbox.join(' ')}`;
      assert.equal(actual.result.stderr, expected.result.stderr, `${l}: stderr`);
      assert.equal(actual.result.stdout, expected.result.stdout, `${l}: stdout`);
      assert.equal(actual.result.status, expected.result.status, `${l}: exit status`);
      if (!sameLeft(actual.left, expected.left, c.blockSlack ?? 0)) assert.equal(actual.left, expected.left, `${l}: the target left`);
    }
    last = expected;
  }
  return last!;
}
