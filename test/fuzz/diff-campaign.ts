// A differential campaign: cases run `jobs` at a time (each case is a row of processes, so two
// jobs keep two cores busy), findings saved once per signature, a summary by classifier rule.
import { buildDiffCase, runDiffCase, saveDiffFinding, diffSignature, type DiffCase, type Difference } from './differential.ts';
import type { Seed } from './seeds.ts';

export interface DiffCampaignStats {
  cases: number;
  commands: number;
  agreed: number;
  /** Differences explained by each classifier rule. */
  byRule: Map<string, number>;
  findings: { c: DiffCase; d: Difference; file?: string }[];
  distinct: number;
  ms: number;
}

export async function runDiffCampaign(seeds: Seed[], campaign: number, opts: { first?: number; jobs: number; until: (cases: number, ms: number) => boolean; save: boolean; log?: (line: string) => void }): Promise<DiffCampaignStats> {
  const started = performance.now();
  const stats: DiffCampaignStats = { cases: 0, commands: 0, agreed: 0, byRule: new Map(), findings: [], distinct: 0, ms: 0 };
  const seen = new Set<string>();
  let next = opts.first ?? 0;
  const worker = async () => {
    while (!opts.until(stats.cases, performance.now() - started)) {
      const c = buildDiffCase(seeds, campaign, next++);
      const r = await runDiffCase(c);
      stats.cases++;
      stats.agreed += r.agreed;
      stats.commands += r.agreed + new Set(r.differences.map((d) => d.command)).size;
      for (const d of r.differences) if (d.rule) stats.byRule.set(d.rule, (stats.byRule.get(d.rule) ?? 0) + 1);
      for (const d of r.findings) {
        const key = diffSignature(c.seed.driver, d);
        const fresh = !seen.has(key);
        seen.add(key);
        const file = opts.save && fresh ? saveDiffFinding(c, d) : undefined;
        stats.findings.push({ c, d, file });
        if (fresh) opts.log?.(`FINDING ${c.seed.name} case ${c.index} (campaign ${campaign}, qemu ${c.mode.version}${c.mode.sandboxed ? ', sandboxed' : ''}${c.mode.unsafeQuirks ? ', --unsafe-quirks' : ''}, -f ${c.format ?? '(probe)'}): ${d.command} ${d.what}\n  ${d.detail.replace(/\n/g, '\n  ')}${file ? `\n  -> test/fuzz/differential-findings/${file}` : ''}`);
      }
    }
  };
  await Promise.all(Array.from({ length: opts.jobs }, worker));
  stats.distinct = seen.size;
  stats.ms = performance.now() - started;
  return stats;
}

export function summary(stats: DiffCampaignStats): string {
  const rules = [...stats.byRule].map(([rule, n]) => `${rule} ${n}`).join(', ') || 'none';
  return `${stats.cases} cases, ${stats.commands} command pairs in ${(stats.ms / 1000).toFixed(0)} s (${(stats.cases / (stats.ms / 1000)).toFixed(2)} cases/s); ${stats.agreed} agreed; explained differences: ${rules}; ${stats.findings.length} unexplained (${stats.distinct} distinct)`;
}
