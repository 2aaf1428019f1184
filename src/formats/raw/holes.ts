// Where a plain file has holes, for `map`. qemu asks the file system (SEEK_DATA/SEEK_HOLE), which
// Node cannot do and the guest has no path for. When the host could ask (host/data-runs.ts), the
// device carries its answer (`dataRuns`) and that is used as is. Otherwise, what the guest can
// know: how many bytes the file system allocated (st_blocks) and the bytes themselves. A file with nothing allocated is all hole;
// a fully allocated one is all data; otherwise a 4 KiB block of zeros is taken for a hole, except
// the first block, which qemu-img create always writes (so probing can find the alignment). That
// matches qemu on files written by qemu-img/qemu-io and on copies that keep holes; it differs from
// qemu where a partly sparse file also has zero blocks actually written or zero-allocated
// (qemu-io `write -z` on raw; qemu: data, here: hole), or a first block that is a hole.
// Past the end of the file is always a hole (qemu's last sector rounds the disk up).
import type { BlockDevice } from '../types.ts';

/** The file system block size qemu's SEEK_DATA answers in on ext4/xfs/tmpfs. */
const BLOCK = 4096;
/** Bytes read at a time while scanning for zero blocks. */
const CHUNK = 256 * 1024;
const ZEROS = new Uint8Array(BLOCK);
/** One read buffer for every scan (the guest is single-threaded and fileRun does not re-enter). */
const scratch = new Uint8Array(CHUNK);

/** The first of sorted, disjoint [start, end) pairs that ends after pos, if any. */
function pairAfter(pairs: readonly (readonly [number, number])[], pos: number): readonly [number, number] | undefined {
  let lo = 0;
  let hi = pairs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pairs[mid][1] <= pos) lo = mid + 1;
    else hi = mid;
  }
  return pairs[lo];
}

/** The run from `pos` by the host's SEEK_DATA/SEEK_HOLE answer (sorted, disjoint runs). */
function runFromDataRuns(runs: readonly (readonly [number, number])[], pos: number, max: number): { length: number; hole: boolean } {
  const run = pairAfter(runs, pos);
  if (run === undefined) return { length: max, hole: true };
  if (run[0] > pos) return { length: Math.min(max, run[0] - pos), hole: true };
  return { length: Math.min(max, run[1] - pos), hole: false };
}

/**
 * The run from `pos` when the file's allocation is known for certain (the host's answer, or
 * st_blocks saying all or nothing is allocated); undefined when only a guess could tell.
 */
export function knownFileRun(dev: BlockDevice, pos: number, max: number): { length: number; hole: boolean } | undefined {
  if (pos >= dev.size) return { length: max, hole: true };
  if (dev.dataRuns) {
    // Past where the host stopped asking, the runs say nothing: fall through to what st_blocks tells.
    const end = Math.min(dev.size, dev.dataRunsEnd ?? dev.size);
    if (pos < end) return runFromDataRuns(dev.dataRuns, pos, Math.min(max, end - pos));
    // Past it, holes between the host's coarse spans are certain; inside one, only a guess tells.
    if (dev.dataSpans) {
      const span = pairAfter(dev.dataSpans, pos);
      if (span === undefined) return { length: Math.min(max, dev.size - pos), hole: true };
      if (span[0] > pos) return { length: Math.min(max, span[0] - pos), hole: true };
      return undefined;
    }
  }
  const allocated = dev.allocated;
  if (allocated === undefined || allocated >= Math.ceil(dev.size / BLOCK) * BLOCK) return { length: Math.min(max, dev.size - pos), hole: false };
  if (allocated === 0) return { length: Math.min(max, dev.size - pos), hole: true };
  return undefined;
}

/**
 * How many bytes from `pos` (at most `max`) are certainly a hole or past the end of the file, so
 * read as zeros: only what the host's answer or st_blocks tell, never the zero-block guess.
 */
export function certainHoleLength(dev: BlockDevice, pos: number, max: number): number {
  let done = 0;
  while (done < max) {
    const run = knownFileRun(dev, pos + done, max - done);
    if (!run?.hole || !(run.length > 0)) break;
    done += run.length;
  }
  return done;
}

/** A run from `pos` that is all data or all hole, at most `max` bytes. */
export function fileRun(dev: BlockDevice, pos: number, max: number): { length: number; hole: boolean } {
  const run = fileRunInFile(dev, pos, max);
  // A hole that reaches the end of the file runs on through the last sector's rounding: qemu's
  // SEEK_DATA finds no more data and answers the whole request (so compare -s sees one extent, EOF).
  return run.hole && pos + run.length >= dev.size ? { length: max, hole: true } : run;
}

function fileRunInFile(dev: BlockDevice, pos: number, max: number): { length: number; hole: boolean } {
  const known = knownFileRun(dev, pos, max);
  if (known) return known;
  // Guess no further than the host's span: past it the holes are known without reading them.
  const span = dev.dataSpans ? pairAfter(dev.dataSpans, pos) : undefined;
  const inFile = Math.min(max, (span ? span[1] : dev.size) - pos);
  const end = pos + inFile;
  let block = pos - (pos % BLOCK);
  let hole: boolean | undefined;
  // Runs are often a few blocks long: read a little first, more while the run goes on.
  let want = 4 * BLOCK;
  while (block < end) {
    const n = dev.read(scratch.subarray(0, Math.min(want, Math.ceil((end - block) / BLOCK) * BLOCK)), block);
    want = Math.min(want * 4, CHUNK);
    if (n === 0) break;
    for (let at = 0; at < n && block + at < end; at += BLOCK) {
      const piece = scratch.subarray(at, Math.min(n, at + BLOCK));
      const zero = block + at !== 0 && Buffer.compare(piece, ZEROS.subarray(0, piece.length)) === 0;
      if (hole === undefined) hole = zero;
      else if (zero !== hole) return { length: block + at - pos, hole };
    }
    block += n;
  }
  return { length: inFile, hole: hole ?? true };
}
