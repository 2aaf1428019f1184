// Where a file has data and where it has holes, as qemu's file driver learns it: lseek with
// SEEK_DATA/SEEK_HOLE. qemu's map and compare report a hole as zeros and a block of written zeros
// as data, and the difference shows in their output (raw images; qcow2 clusters preallocated with
// preallocation=metadata, which sit in holes of the file). Node has no SEEK_DATA, and the guest
// could not use it anyway (it has no path and no FFI), so the trusted host asks and passes the
// answer along in the device table.
//
// lseek comes through koffi (libc.ts), loaded lazily, only for a file with blocks allocated (nothing
// allocated: all hole, no need to ask). A fully allocated file is asked too: blocks reserved by
// fallocate (raw preallocation=falloc, parallels' preallocation) are unwritten extents, which
// SEEK_DATA reports as holes on ext4 and xfs, and so does qemu's map.
// When it cannot load (not installed, another platform), the guest falls back to st_blocks and a
// zero scan (formats/raw/holes.ts), which matches qemu on files written by qemu-img and qemu-io.
import { fstatSync } from 'node:fs';
import { libcFunction } from './libc.ts';
import { MAX_DATA_RUNS } from '../protocol/messages.ts';

const SEEK_DATA = 3;
const SEEK_HOLE = 4;

type Lseek = (fd: number, offset: number, whence: number) => number | bigint;

/** lseek(2), or null when koffi (or libc) cannot be loaded here. */
function loadLseek(): Lseek | null {
  return libcFunction<Lseek>('int64_t lseek(int fd, int64_t offset, int whence)');
}

/** The host's answer for a file: its data runs over [0, end), or over the whole file without `end`. */
export interface DataRunsAnswer {
  runs: [number, number][];
  /** Set when the budget ran out: the runs describe only the bytes before it. */
  end?: number;
  /**
   * Past `end`: spans that cover every data run there, each possibly holding holes, coarsened to fit
   * the budget; outside them the file is certainly a hole (so the guest need not read it).
   */
  spans?: [number, number][];
}

/**
 * The data runs of the file open at `fd`, or undefined when the guest needs none (nothing is
 * allocated: all hole, which st_blocks tells it) or they cannot be had (no koffi, more than `budget`).
 */
export function fileDataRuns(fd: number, budget = MAX_DATA_RUNS): [number, number][] | undefined {
  const answer = fileDataRunsUpTo(fd, budget);
  return answer && answer.end === undefined ? answer.runs : undefined;
}

/**
 * As fileDataRuns, but a file with more than `budget` runs (how many the request may still carry)
 * gets most of its first runs exactly, where they stop, and coarse spans over the rest (within
 * the budget too: every run past the budget costs one hole the guest reads), so that the guest guesses only inside them and skips the holes between.
 */
export function fileDataRunsUpTo(fd: number, budget = MAX_DATA_RUNS): DataRunsAnswer | undefined {
  const st = fstatSync(fd);
  const allocated = st.blocks * 512;
  if (!st.isFile() || st.size === 0 || allocated === 0 || budget < 2) return undefined;
  const seek = loadLseek();
  if (!seek) return undefined;
  const runs: [number, number][] = [];
  let spans: CoarseSpans | undefined;
  try {
    for (let pos = 0; pos < st.size; ) {
      const data = Number(seek(fd, pos, SEEK_DATA));
      // -1: ENXIO, no data after pos (or the file system cannot tell: then no hint at all).
      if (data < 0 || data >= st.size) {
        // Blocks are allocated, so some data exists: no answer at all means the file system cannot tell.
        if (runs.length === 0) return undefined;
        break;
      }
      let hole = Number(seek(fd, data, SEEK_HOLE));
      if (hole < 0 || hole > st.size) hole = st.size;
      if (hole <= data) return undefined;
      if (spans) spans.add(data, hole);
      else if (runs.length < budget) runs.push([data, hole]);
      else {
        // Over budget: the last eighth of the exact runs becomes the first spans.
        const exact = budget - Math.max(1, Math.floor(budget / 8));
        spans = new CoarseSpans(budget - exact);
        for (const [s, e] of runs.splice(exact)) spans.add(s, e);
        spans.add(data, hole);
      }
      pos = hole;
    }
  } catch {
    return undefined;
  }
  if (!spans) return { runs };
  return { runs, end: spans.first(), spans: spans.list };
}

/**
 * Spans covering data runs added in order, within `cap`: when full, the narrowest holes between
 * spans are merged away first (each pass joins pairs across holes below a width that doubles
 * only when nothing is narrower), so the wide holes, which spare the most reading, stay.
 */
class CoarseSpans {
  readonly list: [number, number][] = [];
  private gap = 4096;
  constructor(private readonly cap: number) {}
  add(start: number, end: number): void {
    this.list.push([start, end]);
    if (this.list.length > this.cap) this.coarsen(Math.max(1, Math.floor((this.cap * 3) / 4)));
  }
  first(): number {
    return this.list[0][0];
  }
  private coarsen(target: number): void {
    const list = this.list;
    while (list.length > target) {
      let kept = 0;
      let merged = false;
      for (let i = 0; i < list.length; i++) {
        const next = list[i + 1];
        // Join a pair across a narrow hole, but no more than needed to reach the target.
        if (next && next[0] - list[i][1] < this.gap && list.length - (i - kept) - 1 >= target) {
          list[kept++] = [list[i][0], next[1]];
          i++;
          merged = true;
        } else list[kept++] = list[i];
      }
      list.length = kept;
      if (!merged) this.gap *= 2;
    }
  }
}
