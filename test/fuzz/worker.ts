// The long campaign's worker thread: builds the seeds, runs cases from `first` on and reports
// findings; the case it is on is kept in shared memory so that the main thread can name a case
// that hangs (and kill the worker, which a synchronous loop cannot do for itself).
import { parentPort, workerData } from 'node:worker_threads';
import { runCampaign } from './campaign.ts';
import { buildSeeds } from './seeds.ts';

const data = workerData as { campaign: number; first: number; current: Int32Array; done: Int32Array };
const seeds = await buildSeeds();
parentPort!.postMessage({ ready: true });
runCampaign(seeds, data.campaign, {
  first: data.first,
  until: () => false,
  onCase: (index) => {
    Atomics.store(data.current, 0, index);
    Atomics.add(data.done, 0, 1);
  },
  onFinding: (f) => parentPort!.postMessage(f),
});
