// Generative differential hunt: `npm run hunt -- <area> --minutes N [--seed S] [--case I] [--keep]`.
// Each case builds random valid images with the oracles (test/fuzz/generative/images.ts) and runs
// random command lines of one area through qemu-img 7.2/10.0 and the built instar CLI (npm run build
// first; a private copy of dist/ is used so a rebuild does not change it mid-run). Every case prints
// its seed; `--case I` replays case I of campaign S alone. Case directories that differ are kept
// (under /tmp/instar-hunt/) with the recipe. Run it under `nice -n 19`: it is not part of npm test.
import { parseArgs } from 'node:util';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { caseSeed } from '../test/fuzz/prng.ts';
import { useDistSnapshot } from '../test/fuzz/diff-tools.ts';
import { firstDifference, signature, type HuntArea } from '../test/fuzz/generative/area.ts';

// One line per area (helpers add theirs here).
const AREAS: Record<string, () => Promise<HuntArea>> = {
  'read-only': async () => (await import('../test/fuzz/generative/read-only.ts')).area,
  mutating: async () => (await import('../test/fuzz/generative/mutating.ts')).area,
  convert: async () => (await import('../test/fuzz/generative/convert.ts')).area,
  dd: async () => (await import('../test/fuzz/generative/dd.ts')).area,
  'other-formats': async () => (await import('../test/fuzz/generative/other-formats.ts')).area,
};

const { values, positionals } = parseArgs({ options: { minutes: { type: 'string', default: '5' }, seed: { type: 'string' }, case: { type: 'string' }, keep: { type: 'boolean', default: false } }, allowPositionals: true });
const name = positionals[0];
if (name === undefined || !(name in AREAS)) throw new Error(`usage: npm run hunt -- <${Object.keys(AREAS).join('|')}> --minutes N [--seed S] [--case I] [--keep]`);
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error('--minutes N: N must be a positive number');
const campaign = values.seed !== undefined ? Number(values.seed) : Date.now() % 2 ** 31;
const area = await AREAS[name]();
// INSTAR_HUNT_ROOT: another place for the case directories (hunts run side by side, each cleaned up by its owner).
const root = process.env.INSTAR_HUNT_ROOT || '/tmp/instar-hunt';
const removeSnapshot = useDistSnapshot();
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.once(signal, () => {
    removeSnapshot();
    process.exit(code);
  });
}

console.log(`hunt ${name}: campaign ${campaign}, ${values.case !== undefined ? `case ${values.case}` : `${minutes} min`}`);
const seen = new Map<string, number>();
const started = Date.now();
let cases = 0;
let commands = 0;
let qemuFailed = 0;
for (let index = Number(values.case ?? 0); ; index++) {
  if (values.case !== undefined ? index > Number(values.case) : Date.now() - started >= minutes * 60_000) break;
  const seed = caseSeed(campaign, index);
  // Made again for each case: someone may have cleared the root between cases.
  mkdirSync(root, { recursive: true });
  const dir = mkdtempSync(join(root, `${name}-${campaign}-${index}-`));
  let keep = values.keep;
  try {
    const report = await area.runCase(seed, dir);
    cases++;
    commands += report.commands;
    qemuFailed += report.qemuFailed ?? 0;
    const fresh = report.mismatches.filter((m) => {
      const sig = signature(m);
      seen.set(sig, (seen.get(sig) ?? 0) + 1);
      return seen.get(sig) === 1 || values.case !== undefined;
    });
    if (fresh.length > 0) {
      keep = true;
      console.log(`\n=== case ${index} (campaign ${campaign}, seed ${seed}) in ${dir}`);
      console.log(report.recipe.join('\n'));
      for (const m of fresh) console.log(`--- qemu-img ${m.command}  [${m.version}] ${m.what}: ${firstDifference(m.qemu, m.instar)}`);
      writeFileSync(join(dir, 'HUNT.json'), JSON.stringify({ campaign, index, seed, ...report }, null, 1));
    }
  } catch (e) {
    keep = true;
    console.log(`\n=== case ${index} (campaign ${campaign}, seed ${seed}) in ${dir}: harness error ${(e as Error).stack}`);
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}
removeSnapshot();
console.log(`\ndone: ${cases} cases, ${commands} commands (${qemuFailed} failed in qemu), ${seen.size} distinct mismatches in ${Math.round((Date.now() - started) / 1000)} s`);
for (const [sig, n] of [...seen].sort((a, b) => b[1] - a[1])) console.log(`${String(n).padStart(5)}  ${sig.split('\n')[0]}`);
