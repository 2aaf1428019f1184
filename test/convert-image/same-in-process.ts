// sameAsOracles (harness.ts) with instar's --sandbox=none runs made in this process in the short
// tier (the CLI's runCommandLine, as the built CLI runs it): no launch of the built CLI for them.
// The long tier and INSTAR_TEST_CLI=1 launch it, as sameAsOracles does; sandboxed runs launch it always.
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { assertLikeOracles, runTool, sameAsOracles, type CompareOptions, type RunOutcome } from './harness.ts';
import { runInProcessWith } from '../convert/in-process-cli.ts';
import { SHORT_TIER_IN_PROCESS } from '../helpers/in-process.ts';
import { VERSIONS } from '../helpers/oracles.ts';

/** What runTool (harness.ts) leaves for instar, the command line run in this process. */
async function runInstarHere(base: string, label: string, args: string[]): Promise<RunOutcome> {
  const dir = join(base, `${label}-instar`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  const result = await runInProcessWith(['--sandbox=none', ...args], dir);
  return { result, files: new Map(readdirSync(dir).sort().map((name) => [name, readFileSync(join(dir, name))])), dir };
}

/** sameAsOracles, its comparisons unchanged (the oracles first, then instar under each profile). */
export async function sameAsOraclesAsync(base: string, args: string[], o: CompareOptions): Promise<RunOutcome[]> {
  if (o.sandbox || !SHORT_TIER_IN_PROCESS) return sameAsOracles(base, args, o);
  const theirs = new Map(VERSIONS.map((v) => [v, runTool(v, base, `${o.label}-${v}`, args)]));
  const outcomes: RunOutcome[] = [];
  for (const version of o.profiles ?? VERSIONS) {
    const ours = await runInstarHere(base, `${o.label}-${version}`, [`--qemu-version=${version}`, ...(o.instarOptions ?? []), ...args]);
    assertLikeOracles(ours, theirs, version, args, o);
    outcomes.push(ours);
  }
  return outcomes;
}
