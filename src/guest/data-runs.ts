// The host's SEEK_DATA/SEEK_HOLE answer for a device arrives in the request (DeviceSpec.dataRuns).
// The request is the trusted host's, but the runs only steer block status: a malformed list is
// dropped (the op then guesses from the bytes, as without a host answer), never trusted blindly.
import { MAX_DATA_RUNS } from '../protocol/messages.ts';

/** The host's runs for a device, describing [0, end) (without `end`: the whole file). */
export interface DataRunsHint {
  runs: readonly (readonly [number, number])[];
  end?: number;
}

/**
 * The host's data runs for a device, if well formed: a bounded list of sorted, disjoint, non-empty
 * [start, end) pairs of safe integers, and where they stop describing the file (at or past the
 * last run's end). Anything else is dropped: the op then guesses from the bytes.
 */
export function checkedDataRuns(runs: unknown, end?: unknown): DataRunsHint | undefined {
  if (!Array.isArray(runs) || runs.length > MAX_DATA_RUNS) return undefined;
  let last = 0;
  for (const r of runs) {
    if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || !Number.isSafeInteger(r[1])) return undefined;
    if (r[0] < last || r[1] <= r[0]) return undefined;
    last = r[1];
  }
  if (end === undefined) return { runs: runs as [number, number][] };
  if (!Number.isSafeInteger(end) || (end as number) < last) return undefined;
  return { runs: runs as [number, number][], end: end as number };
}
