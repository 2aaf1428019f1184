// The differential fuzzer's share of `npm test` (≤ 60 s of wall time): the first cases of a fixed
// campaign through qemu-img and the built instar CLI (info, map, compare, convert -O raw), then
// every saved finding replayed. A difference the classifier does not explain fails the run
// unless it matches a known open finding (reported as TODO); a fixed finding must stay fixed.
// Long campaigns: `nice -n 10 npm run fuzz -- --differential --minutes N`.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { buildSeeds, type Seed } from './seeds.ts';
import { runDiffCampaign, summary } from './diff-campaign.ts';
import { diffSignature, findingCase, loadDiffFindings, runDiffCase } from './differential.ts';
import { BOTH_SLOW, RULES } from './diff-classify.ts';
import { LONG } from '../helpers/long.ts';

const CAMPAIGN = 20261127;
const SLICE_MS = 15_000;
const MIN_CASES = 12;
const MAX_CASES = 48;
// Short tier: the campaign's first 6 cases (mutants of the first 6 seeds, each through all four
// commands; CI's timed slice reached 14, one per seed in turn); long tier: the timed slice.
const SHORT_CASES = 6;

let seeds: Seed[] = [];
before(async () => {
  seeds = await buildSeeds();
});

const findings = loadDiffFindings();
/** Signatures of the open findings (by their seed's driver, known once the seeds are built). */
let known = new Set<string>();
before(() => {
  const driverOf = (name: string) => seeds.find((s) => s.name === name)?.driver ?? name;
  known = new Set(findings.filter((f) => f.status === 'open').map((f) => diffSignature(driverOf(f.seed), f)));
});

test('classifier rules each carry a one-line reason', () => {
  for (const rule of [...RULES, BOTH_SLOW]) assert.ok(rule.reason.length > 20 && !rule.reason.includes('\n'), rule.name);
});

test('seeded differential slice: instar and qemu-img agree, or a documented rule explains why not', async (t) => {
  // At least MIN_CASES whatever the load (the same cases every run), more while time is left.
  const until = LONG ? (cases: number, ms: number) => cases >= MIN_CASES && (cases >= MAX_CASES || ms >= SLICE_MS) : (cases: number) => cases >= SHORT_CASES;
  const stats = await runDiffCampaign(seeds, CAMPAIGN, { jobs: 2, save: false, until });
  t.diagnostic(summary(stats));
  const fresh = stats.findings.filter(({ c, d }) => !known.has(diffSignature(c.seed.driver, d)));
  for (const { c, d } of stats.findings.slice(0, 8)) t.diagnostic(`${known.has(diffSignature(c.seed.driver, d)) ? 'known' : 'NEW'}: ${c.seed.name} case ${c.index} ${d.command} ${d.what}: ${d.detail.split('\n').slice(0, 3).join(' | ')}`);
  // Most commands must agree outright, or the slice tests nothing but the classifier.
  assert.ok(stats.agreed > stats.commands * 0.7, `${stats.agreed} of ${stats.commands} command pairs agreed`);
  assert.deepEqual(fresh.map(({ c, d }) => `${c.seed.name} case ${c.index} (campaign ${CAMPAIGN}): ${d.command} ${d.what}: ${d.detail}`), []);
});

describe('saved differential findings replay', { concurrency: 2 }, () => {
  for (const f of findings) test(f.file, async (t) => {
    const r = await runDiffCase(findingCase(f, seeds), f.command);
    const left = r.findings.filter((d) => d.command === f.command);
    if (f.status === 'open') {
      if (left.length > 0) t.todo(`open: ${f.command} ${f.what}${f.note ? ` (${f.note})` : ''}`);
      else t.diagnostic('agrees now: mark it "fixed"');
      return;
    }
    assert.deepEqual(left.map((d) => `${d.what}: ${d.detail}`), []);
  });
});
