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
 * gets its first `budget` runs and where they stop, so that only the rest is guessed.
 */
export function fileDataRunsUpTo(fd: number, budget = MAX_DATA_RUNS): DataRunsAnswer | undefined {
  const st = fstatSync(fd);
  const allocated = st.blocks * 512;
  if (!st.isFile() || st.size === 0 || allocated === 0) return undefined;
  const seek = loadLseek();
  if (!seek) return undefined;
  const runs: [number, number][] = [];
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
      if (runs.length >= budget) return runs.length > 0 ? { runs, end: data } : undefined;
      runs.push([data, hole]);
      pos = hole;
    }
  } catch {
    return undefined;
  }
  return { runs };
}
