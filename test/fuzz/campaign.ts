// A fuzz campaign: case i of campaign c mutates seed (i mod seeds) with the PRNG seeded by
// caseSeed(c, i), so any case can be rebuilt alone. Findings are saved as small JSON files
// (the mutant gzip'd, base64) in test/fuzz/regressions/, which fuzz.test.ts replays.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Rng, caseSeed } from './prng.ts';
import { mutate } from './mutate.ts';
import { LIMITS, runCase, type CaseInput } from './engine.ts';
import type { Seed } from './seeds.ts';

export const REGRESSIONS = join(dirname(fileURLToPath(import.meta.url)), 'regressions');

export interface Regression {
  /** 'open' until the driver is fixed; the replay marks open ones as TODO, fixed ones must pass. */
  status: 'open' | 'fixed';
  seed: string;
  driver?: string;
  failure: string;
  campaign: number;
  index: number;
  /** The mutant, gzip'd and base64-encoded. */
  image: string;
}

/** Rebuilds case `index` of campaign `campaign`. */
export function buildCase(seeds: Seed[], campaign: number, index: number): { seed: Seed; input: CaseInput } {
  const seed = seeds[index % seeds.length];
  const rng = new Rng(caseSeed(campaign, index));
  const bytes = mutate(seed, rng);
  // A fifth of the cases go through detection, so probes and format confusion are fuzzed too.
  return { seed, input: { bytes, driver: rng.chance(0.2) ? undefined : seed.driver } };
}

/** A failure with its numbers blanked: the same bug on other mutants has the same signature. */
export function signature(failure: string): string {
  return failure.replace(/0x[0-9a-f]+|\d+/gi, 'N');
}

export function loadRegressions(): (Regression & { file: string })[] {
  if (!existsSync(REGRESSIONS)) return [];
  return readdirSync(REGRESSIONS)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ ...(JSON.parse(readFileSync(join(REGRESSIONS, f), 'utf8')) as Regression), file: f }));
}

export function regressionInput(r: Regression): CaseInput {
  return { bytes: gunzipSync(Buffer.from(r.image, 'base64')), driver: r.driver };
}

/** Saves a finding (once per signature and seed); returns the file name. */
export function saveRegression(seed: Seed, input: CaseInput, failure: string, campaign: number, index: number): string {
  mkdirSync(REGRESSIONS, { recursive: true });
  const id = createHash('sha256').update(seed.name + signature(failure)).digest('hex').slice(0, 12);
  const file = `${seed.name}-${id}.json`;
  const path = join(REGRESSIONS, file);
  if (!existsSync(path)) {
    const r: Regression = { status: 'open', seed: seed.name, driver: input.driver, failure, campaign, index, image: gzipSync(input.bytes, { level: 9 }).toString('base64') };
    writeFileSync(path, JSON.stringify(r, null, 1) + '\n');
  }
  return file;
}

export interface Finding {
  seed: string;
  index: number;
  failure: string;
}

export interface CampaignStats {
  cases: number;
  opened: number;
  findings: Finding[];
  ms: number;
}

/** Runs cases from `first` until `until()` says stop; `onFinding` sees each broken invariant. */
export function runCampaign(seeds: Seed[], campaign: number, opts: { first?: number; until: (cases: number, ms: number) => boolean; onFinding?: (f: Finding, seed: Seed, input: CaseInput) => void; onCase?: (index: number) => void; limits?: typeof LIMITS }): CampaignStats {
  const started = performance.now();
  const stats: CampaignStats = { cases: 0, opened: 0, findings: [], ms: 0 };
  for (let index = opts.first ?? 0; !opts.until(stats.cases, performance.now() - started); index++) {
    opts.onCase?.(index);
    const { seed, input } = buildCase(seeds, campaign, index);
    const r = runCase(input, opts.limits ?? LIMITS);
    stats.cases++;
    if (r.opened) stats.opened++;
    if (r.failure) {
      const f = { seed: seed.name, index, failure: r.failure };
      stats.findings.push(f);
      opts.onFinding?.(f, seed, input);
    }
  }
  stats.ms = performance.now() - started;
  return stats;
}
