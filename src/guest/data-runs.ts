// The host's SEEK_DATA/SEEK_HOLE answer for a device arrives in the request (DeviceSpec.dataRuns).
// The request is the trusted host's, but the runs only steer block status: a malformed list is
// dropped (the op then guesses from the bytes, as without a host answer), never trusted blindly.
import { MAX_DATA_RUNS } from '../protocol/messages.ts';

/** The host's runs for a device, describing [0, end) (without `end`: the whole file). */
export interface DataRunsHint {
  runs: readonly (readonly [number, number])[];
  end?: number;
  /** Past `end`: spans covering all the data there, holes outside them. */
  spans?: readonly (readonly [number, number])[];
}

/** Sorted, disjoint, non-empty [start, end) pairs of safe integers, none before `from`; the last end, or -1. */
function sortedPairsEnd(list: unknown, from: number): number {
  if (!Array.isArray(list) || list.length > MAX_DATA_RUNS) return -1;
  let last = from;
  for (const r of list) {
    if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || !Number.isSafeInteger(r[1])) return -1;
    if (r[0] < last || r[1] <= r[0]) return -1;
    last = r[1];
  }
  return last;
}

/**
 * The host's data runs for a device, if well formed: a bounded list of sorted, disjoint, non-empty
 * [start, end) pairs of safe integers, and where they stop describing the file (at or past the
 * last run's end), with the spans past that point, sorted and disjoint too. Anything else is
 * dropped: the op then guesses from the bytes.
 */
export function checkedDataRuns(runs: unknown, end?: unknown, spans?: unknown): DataRunsHint | undefined {
  const last = sortedPairsEnd(runs, 0);
  if (last < 0) return undefined;
  if (end === undefined) return spans === undefined ? { runs: runs as [number, number][] } : undefined;
  if (!Number.isSafeInteger(end) || (end as number) < last) return undefined;
  const hint: DataRunsHint = { runs: runs as [number, number][], end: end as number };
  if (spans === undefined) return hint;
  // Spans start at or past `end` (the first one at it, as the host makes them).
  if (sortedPairsEnd(spans, end as number) < 0) return undefined;
  return { ...hint, spans: spans as [number, number][] };
}
