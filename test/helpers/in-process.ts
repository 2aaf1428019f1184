// instar's command line run in the test's own process (pass --sandbox=none: the guest's op code
// runs here too), with the image's directory as cwd as for qemu-img: cheaper than a CLI launch.
import { runCommandLine } from '../../src/cli/run.ts';
import type { RunResult } from './oracles.ts';
import { LONG } from './long.ts';

/**
 * Whether the short tier's unsandboxed runs are made in this process: not in the long tier, nor
 * with INSTAR_TEST_CLI=1, which launch the built CLI for every run.
 */
export const SHORT_TIER_IN_PROCESS = !LONG && process.env.INSTAR_TEST_CLI !== '1';

export async function runInProcess(args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const previous = process.cwd();
  process.chdir(cwd);
  try {
    const status = await runCommandLine(args, { out: (t) => { stdout += t; }, err: (t) => { stderr += t; }, env, cwd, argv1: 'qemu-img' });
    return { stdout, stderr, status, signal: null };
  } finally {
    process.chdir(previous);
  }
}
