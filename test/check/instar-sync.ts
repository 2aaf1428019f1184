// instar's command line run in this test process's own worker thread, synchronously (the test
// thread waits on a shared flag), for the differential harnesses whose run() is synchronous:
// the CLI's runCommandLine as the built CLI runs it with --sandbox=none, without a Node launch
// per case (that launch was most of these files' time). Only unsandboxed runs: sandboxed ones,
// INSTAR_TEST_CLI=1 and the long tier (which runs what these files ran before) launch the built CLI.
import { before } from 'node:test';
import { Worker } from 'node:worker_threads';
import { SHORT_TIER_IN_PROCESS } from '../helpers/in-process.ts';
import { runInstar, type RunOpts, type RunResult } from '../helpers/oracles.ts';

const BUFFER = 32 * 1024 * 1024;

const shared = new SharedArrayBuffer(SHORT_TIER_IN_PROCESS ? 8 + BUFFER : 8);
const flag = new Int32Array(shared, 0, 2);
let worker: Worker | undefined;

if (SHORT_TIER_IN_PROCESS) {
  // The worker loads the CLI's code while this thread's event loop runs (its start needs it):
  // the importing file's tests begin once it says it is ready; from then on this thread may block.
  const w = new Worker(new URL('./instar-sync-boot.mjs', import.meta.url), { workerData: { shared } });
  w.unref();
  const ready = new Promise<void>((resolve, reject) => {
    w.once('message', () => resolve());
    w.once('error', reject);
  });
  before(() => ready);
  worker = w;
}

/** runInstar, or (unsandboxed: `--sandbox=none` among the arguments or INSTAR_SANDBOX=none) the same in this process. */
export function instarSync(args: string[], opts: RunOpts = {}): RunResult {
  const env = { ...process.env, ...opts.env } as Record<string, string>;
  const unsandboxed = args.includes('--sandbox=none') || env.INSTAR_SANDBOX === 'none';
  if (!worker || !unsandboxed || opts.input !== undefined) return runInstar(args, opts);
  const cwd = opts.cwd ?? process.cwd();
  Atomics.store(flag, 0, 0);
  const previous = process.cwd();
  // The working directory is the process's: relative names resolve against it in the worker too.
  process.chdir(cwd);
  try {
    worker.postMessage({ args, cwd, env });
    if (Atomics.wait(flag, 0, 0, 300_000) === 'timed-out') throw new Error(`in-process instar ${args.join(' ')}: no answer in 300 s`);
  } finally {
    process.chdir(previous);
  }
  const r = JSON.parse(new TextDecoder().decode(new Uint8Array(shared, 8, flag[1]).slice())) as RunResult & { crash?: string };
  if (r.crash) throw new Error(`in-process instar ${args.join(' ')}: ${r.crash}`);
  return { stdout: r.stdout, stderr: r.stderr, status: r.status, signal: null };
}
