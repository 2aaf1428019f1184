// What `commit -p` prints between 0% and 100%. qemu-img's commit is a mirror job: it marks the
// base's bitmap-granularity chunks that the images above allocate dirty, then copies them in
// areas of consecutive dirty chunks (at most the 16 MiB buffer), each area cut by the chain's
// block status into operations: data at most 1 MiB, zero runs whole (written as zeros). An
// operation adds its bytes to the job's progress when it ends; the total is the dirty chunks'
// bytes. qemu-img prints the progress each time its event loop wakes, so what it shows depends
// on which operations had ended then: data copies overlap in its thread pool (their steps come
// and go from run to run), while zero writes into a qcow2 base take the image's lock one after
// another, and each that has to load or allocate an L2 table makes the loop wake in between.
// instar models the operations as ending one after another and prints the progress before each
// one that waits for I/O: one of the outputs qemu gives for copies, the output it always gives
// for zero writes.
import type { Image } from '../formats/types.ts';
import { ProgressRule } from '../output/progress.ts';
import { statusView } from './compare-status.ts';

// Runs that read as zeros through the whole chain (whose bottom has no backing file) are zero writes.
export type MirrorMethod = 'copy' | 'zero';
export interface MirrorOp { offset: number; bytes: number; method: MirrorMethod }

const BUFFER_SIZE = 16 * 1024 * 1024; // DEFAULT_MIRROR_BUF_SIZE: 16 in flight of 1 MiB
const MAX_IO_BYTES = 1024 * 1024;

/** The base as the mirror's zero writes see it. */
export interface TargetShape {
  /** Its cluster size (a raw base: undefined). */
  clusterSize?: number;
  /** A qcow2 version 3 base records zeros in its L2 tables without writing data. */
  zeroClusters: boolean;
}

/**
 * The mirror's operations in the order it starts them, over `dirty` (granularity-aligned,
 * merged byte ranges) of a disk of `size` bytes.
 */
export function mirrorOps(top: Image, dirty: [number, number][], granularity: number, target: TargetShape): MirrorOp[] {
  const size = top.virtualSize;
  const ops: MirrorOp[] = [];
  const maxChunks = Math.max(1, Math.ceil(BUFFER_SIZE / granularity));
  // Block status as qemu's driver answers it: a qcow2 top's answers end with each L2 table.
  const status = statusView(top);
  for (const [start, end] of dirty) {
    for (let area = start; area < end && area < size; area += maxChunks * granularity) {
      let chunks = Math.min(maxChunks, (end - area) / granularity);
      let offset = area;
      while (chunks > 0 && offset < size) {
        const e = status(offset, Math.min(offset + chunks * granularity, size));
        let bytes = e.kind === 'data' ? Math.min(e.length, MAX_IO_BYTES) : e.length;
        bytes -= bytes % granularity;
        let method: MirrorMethod = 'copy';
        if (bytes < granularity) bytes = granularity;
        else if (e.kind !== 'data' && aligned(offset, bytes, target.clusterSize, size)) method = 'zero';
        bytes = Math.min(bytes, size - offset);
        ops.push({ offset, bytes, method });
        offset += bytes;
        chunks -= Math.ceil(bytes / granularity);
      }
    }
  }
  return ops;
}

/** bdrv_round_to_subclusters leaves the range as it is (qemu's condition for a zero write). */
function aligned(offset: number, bytes: number, clusterSize: number | undefined, size: number): boolean {
  if (clusterSize === undefined) return true;
  const end = offset + bytes;
  return offset % clusterSize === 0 && (end % clusterSize === 0 || end >= size);
}

/** Whether an operation waits for I/O when the ones before it have ended. */
function waitsForIo(op: MirrorOp, target: TargetShape, touchedL2: Set<number>): boolean {
  if (!target.zeroClusters || target.clusterSize === undefined) return true;
  // Each L2 table covers clusterSize / 8 clusters; the first write into it loads or allocates it.
  const coverage = (target.clusterSize * target.clusterSize) / 8;
  let io = op.method === 'copy';
  for (let l2 = Math.floor(op.offset / coverage); l2 * coverage < op.offset + op.bytes; l2++) {
    if (!touchedL2.has(l2)) io = true;
    touchedL2.add(l2);
  }
  return io;
}

/**
 * The percentages qemu-img shows between its first 0% and its final 100%, in order; only those
 * its print rule lets through (about a hundred at most, whatever the disk's size).
 */
export function commitProgress(ops: MirrorOp[], dirtyBytes: number, target: TargetShape): number[] {
  const shown: number[] = [];
  const rule = new ProgressRule();
  const touched = new Set<number>();
  let done = 0;
  ops.forEach((op, i) => {
    const io = waitsForIo(op, target, touched);
    // (float)current / total * 100.f, as qemu-img's run_block_job computes it.
    if (io && i > 0) {
      const value = rule.set(Math.fround(Math.fround(Math.fround(done) / Math.fround(dirtyBytes)) * 100));
      if (value !== undefined && value !== 0) shown.push(value);
    }
    done += op.bytes;
  });
  return shown;
}
