// Byte comparison of files too big to read whole (a raw target of a 64 GiB sparse source: Node's
// readFileSync stops at 2 GiB). Only where either file holds data (qemu-img map of each as raw,
// which asks SEEK_DATA) are the bytes read and compared, a chunk at a time; elsewhere both files
// are holes and read as zeros.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { oracle } from '../../helpers/oracles.ts';

/** Files above this are compared by their data runs. */
export const BIG_FILE = 1024 * 1024 * 1024;
const CHUNK = 1024 * 1024;

/** The data runs [start, end) of a file, by qemu-img map -f raw. */
function dataRuns(path: string): [number, number][] {
  const r = spawnSync(oracle('10.0'), ['map', '-f', 'raw', '--output=json', path], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`map of ${path}: ${r.stderr.trim()}`);
  return (JSON.parse(r.stdout) as { start: number; length: number; data: boolean }[]).filter((e) => e.data).map((e) => [e.start, e.start + e.length]);
}

/** Sorted, merged union of two run lists. */
function union(a: [number, number][], b: [number, number][]): [number, number][] {
  const all = [...a, ...b].sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const [s, e] of all) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/** The first offset where two big files differ, or -1. */
export function firstBigDifference(x: string, y: string): number {
  const sx = statSync(x).size;
  const sy = statSync(y).size;
  if (sx !== sy) return Math.min(sx, sy);
  const fx = openSync(x, 'r');
  const fy = openSync(y, 'r');
  const bx = Buffer.alloc(CHUNK);
  const by = Buffer.alloc(CHUNK);
  try {
    for (const [start, end] of union(dataRuns(x), dataRuns(y))) {
      for (let at = start; at < end; at += CHUNK) {
        const n = Math.min(CHUNK, end - at);
        readSync(fx, bx, 0, n, at);
        readSync(fy, by, 0, n, at);
        if (bx.subarray(0, n).equals(by.subarray(0, n))) continue;
        return at + bx.subarray(0, n).findIndex((v, k) => v !== by[k]);
      }
    }
    return -1;
  } finally {
    closeSync(fx);
    closeSync(fy);
  }
}
