// Long fuzz campaign: `npm run fuzz -- --minutes N [--campaign C]`. Unseeded by default (the
// campaign number comes from the clock and is printed, so every case reproduces).
// Prints executions per second; saves every new finding to test/fuzz/regressions/ (replayed by
// test/fuzz/fuzz.test.ts); a case that runs longer than 30 s is killed and saved as a hang.
// `--seeds NAME,...` limits either mode to some seeds (by name prefix).
// `--differential [--jobs J] [--first I]`: mutants through qemu-img and the built instar CLI
// (npm run build first); findings go to test/fuzz/differential-findings/. Run it with `nice`.
import { Worker } from 'node:worker_threads';
import { parseArgs } from 'node:util';
import { readFileSync, mkdirSync } from 'node:fs';
import { buildSeeds, SEED_FILE } from '../test/fuzz/seeds.ts';
import { findingCase, materialize, removeLiveDirs, type DiffFinding } from '../test/fuzz/differential.ts';
import { buildCase, saveRegression, signature, type Finding } from '../test/fuzz/campaign.ts';
import { runDiffCampaign, summary } from '../test/fuzz/diff-campaign.ts';
import { useDistSnapshot } from '../test/fuzz/diff-tools.ts';

const { values, positionals } = parseArgs({ options: { minutes: { type: 'string', default: '10' }, campaign: { type: 'string' }, differential: { type: 'boolean', default: false }, jobs: { type: 'string', default: '2' }, first: { type: 'string', default: '0' }, extract: { type: 'string' }, seeds: { type: 'string' } }, allowPositionals: true });
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error('--minutes N: N must be a positive number');
const campaign = values.campaign !== undefined ? Number(values.campaign) : Date.now() % 2 ** 31;
const HANG_MS = 30_000;

const allSeeds = await buildSeeds();
// --seeds a,b: only the seeds whose names start with one of these (a campaign aimed at some formats).
const wanted = values.seeds?.split(',').filter((x) => x !== '');
const seeds = wanted ? allSeeds.filter((s) => wanted.some((w) => s.name.startsWith(w))) : allSeeds;
if (seeds.length === 0) throw new Error(`--seeds ${values.seeds}: no seed matches (${allSeeds.map((s) => s.name).join(', ')})`);
if (values.extract !== undefined) {
  // A saved differential finding as files, to reproduce it by hand: --extract FINDING.json DIR
  const [file, dir] = [values.extract, positionals[0]];
  if (dir === undefined) throw new Error('--extract FINDING.json DIR');
  const f = JSON.parse(readFileSync(file, 'utf8')) as DiffFinding;
  mkdirSync(dir, { recursive: true });
  materialize(findingCase(f, allSeeds), dir);
  console.log(`${dir}: ${SEED_FILE} (${f.seed} case ${f.index}), run: qemu-img ${f.command} ${f.format ? `-f ${f.format} ` : ''}${SEED_FILE} (instar: --qemu-version ${f.mode.version}${f.mode.unsafeQuirks ? ' --unsafe-quirks' : ''})`);
  process.exit(0);
}
if (values.differential) {
  const jobs = Number(values.jobs);
  console.log(`differential campaign ${campaign}: ${seeds.length} seeds, ${minutes} min, ${jobs} jobs, from case ${values.first}`);
  let lastReport = Date.now();
  const removeSnapshot = useDistSnapshot();
  // Interrupted: remove the snapshot and the cases' directories.
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.once(signal, () => {
      removeSnapshot();
      removeLiveDirs();
      process.exit(code);
    });
  }
  const stats = await runDiffCampaign(seeds, campaign, {
    first: Number(values.first),
    jobs,
    save: true,
    log: (line) => console.log(line),
    until: (cases, ms) => {
      if (Date.now() - lastReport >= 30_000) {
        lastReport = Date.now();
        console.log(`${Math.round(ms / 1000)} s: ${cases} cases (${(cases / (ms / 1000)).toFixed(2)}/s)`);
      }
      return ms >= minutes * 60_000;
    },
  });
  removeSnapshot();
  console.log(`done: ${summary(stats)}`);
  process.exit(0);
}
console.log(`campaign ${campaign}: ${seeds.length} seeds, ${minutes} min`);
const current = new Int32Array(new SharedArrayBuffer(4));
const done = new Int32Array(new SharedArrayBuffer(4));
const seen = new Set<string>();
const findings: Finding[] = [];
let worker: Worker | undefined;

function record(f: Finding): void {
  const key = `${f.seed} ${signature(f.failure)}`;
  if (seen.has(key)) return;
  seen.add(key);
  findings.push(f);
  const { seed, input } = buildCase(seeds, campaign, f.index);
  const file = saveRegression(seed, input, f.failure, campaign, f.index);
  console.log(`FINDING ${f.seed} case ${f.index}: ${f.failure} -> test/fuzz/regressions/${file}`);
}

function start(first: number): void {
  Atomics.store(current, 0, first);
  worker = new Worker(new URL('../test/fuzz/worker-boot.mjs', import.meta.url), { workerData: { campaign, first, current, done } });
  worker.on('message', (m: Finding | { ready: true }) => {
    if (!('ready' in m)) record(m);
  });
  worker.on('error', (e) => console.log(`worker error: ${e.message}`));
}

start(0);
const started = Date.now();
let lastIndex = -1;
let lastChange = Date.now();
let lastDone = 0;
let lastReport = Date.now();
const timer = setInterval(() => {
  const now = Date.now();
  const index = Atomics.load(current, 0);
  if (index !== lastIndex) {
    lastIndex = index;
    lastChange = now;
  } else if (now - lastChange > HANG_MS && worker) {
    void worker.terminate();
    record({ seed: buildCase(seeds, campaign, index).seed.name, index, failure: `hang: case ran over ${HANG_MS / 1000} s` });
    start(index + 1);
    lastChange = now;
  }
  if (now - lastReport >= 10_000) {
    const total = Atomics.load(done, 0);
    console.log(`${Math.round((now - started) / 1000)} s: ${total} execs, ${((total - lastDone) / ((now - lastReport) / 1000)).toFixed(0)}/s, ${findings.length} findings`);
    lastDone = total;
    lastReport = now;
  }
  if (now - started >= minutes * 60_000) {
    clearInterval(timer);
    void worker?.terminate();
    const total = Atomics.load(done, 0);
    console.log(`done: ${total} execs in ${((now - started) / 1000).toFixed(0)} s (${(total / ((now - started) / 1000)).toFixed(0)}/s), ${findings.length} distinct findings`);
    for (const f of findings) console.log(`  ${f.seed} case ${f.index} (campaign ${campaign}): ${f.failure}`);
  }
}, 1000);
