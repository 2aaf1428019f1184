// instar's command line run in the test's own process (pass --sandbox=none: the guest's op code
// runs here too), with the image's directory as cwd as for qemu-img: cheaper than a CLI launch.
import { runCommandLine } from '../../src/cli/run.ts';
import type { RunResult } from './oracles.ts';

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
