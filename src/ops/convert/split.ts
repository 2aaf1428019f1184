// How the copy is shared between the guests of one convert: each guest opens the sources itself
// and takes its own part, computed from the same image by the same rule, so that the host needs
// no answer from a separate open guest before it starts them (one launch fewer).
const MiB = 1024 * 1024;
/** Below this a second guest costs more than it saves: guest 0 copies everything. */
export const PARALLEL_MIN_BYTES = 256 * MiB;
/** Parts start on this alignment (the I/O buffers never straddle two guests). */
export const SPLIT_ALIGN = 2 * MiB;

/** [start, end) of the concatenated disk that guest `worker` of `workers` copies. */
export function workerRange(total: number, worker: number, workers: number): [number, number] {
  const n = total >= PARALLEL_MIN_BYTES ? workers : 1;
  if (worker >= n) return [0, 0];
  const step = Math.ceil(total / n / SPLIT_ALIGN) * SPLIT_ALIGN;
  return [Math.min(total, worker * step), Math.min(total, (worker + 1) * step)];
}
