// Runs each command line it is sent through the CLI's runCommandLine and hands back stdout, stderr
// and the exit status through the shared buffer (instar-sync.ts waits on its first word).
import { parentPort, workerData } from 'node:worker_threads';
import { runCommandLine } from '../../src/cli/run.ts';

const { shared } = workerData as { shared: SharedArrayBuffer };
const flag = new Int32Array(shared, 0, 2);
const bytes = new Uint8Array(shared, 8);

parentPort?.postMessage('ready');
parentPort?.on('message', (m: { args: string[]; cwd: string; env: Record<string, string> }) => {
  let stdout = '';
  let stderr = '';
  const answer = (r: object) => {
    const text = new TextEncoder().encode(JSON.stringify(r));
    const fits = text.length <= bytes.length;
    const out = fits ? text : new TextEncoder().encode(JSON.stringify({ crash: `an answer of ${text.length} bytes` }));
    bytes.set(out);
    flag[1] = out.length;
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  };
  runCommandLine(m.args, { out: (t) => { stdout += t; }, err: (t) => { stderr += t; }, env: m.env, cwd: m.cwd, argv1: 'qemu-img' })
    .then((status) => answer({ stdout, stderr, status }), (e: unknown) => answer({ crash: e instanceof Error ? e.stack : String(e) }));
});
