// instar's command line run in the test's own process with an environment of its own (the CLI's
// runCommandLine, as the built CLI runs it), for the convert tests' short tier: cheaper than a
// launch of the built CLI. INSTAR_SANDBOX=none unless the environment says otherwise.
import { runInProcess, SHORT_TIER_IN_PROCESS } from '../helpers/in-process.ts';
import { runInstar, type OracleVersion, type RunResult } from '../helpers/oracles.ts';

export function runInProcessWith(args: string[], cwd: string, env: Record<string, string> = {}): Promise<RunResult> {
  return runInProcess(args, cwd, { ...process.env, INSTAR_SANDBOX: 'none', ...env });
}

/**
 * The short tier's instar modes for a comparison with qemu-img `version`, as edge-compare.ts runs
 * them: the sandboxed launch under 10.0 only, in-process (in this process) under both versions;
 * the long tier (and INSTAR_TEST_CLI=1) launches the built CLI in both modes under each version.
 */
export function tierModes(version: OracleVersion): string[][] {
  return !SHORT_TIER_IN_PROCESS || version === '10.0' ? [[], ['--sandbox=none']] : [['--sandbox=none']];
}

/** instar with `args` (ending in `sandbox`): in this process for --sandbox=none in the short tier, else the built CLI. */
export async function runInstarMode(args: string[], sandbox: string[], cwd: string, env: Record<string, string> = {}): Promise<RunResult> {
  if (SHORT_TIER_IN_PROCESS && sandbox.includes('--sandbox=none')) return runInProcessWith([...args, ...sandbox], cwd, env);
  return runInstar([...args, ...sandbox], { cwd, env });
}
