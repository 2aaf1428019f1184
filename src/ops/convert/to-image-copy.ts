// The copy loop of `convert -O <format>` into an ImageWriter. It takes the disk as qemu-img
// convert does: each source's block-status runs (copy.ts runs()), cut into chunks of at most
// 2 MiB from each run's start; a data chunk is read and its -S blocks that read as zeros are
// skipped (the fresh image reads zeros already), every other part is one write request, in
// ascending order. Requests reach the writer whole clusters at a time (ClusterAligner), as the
// ImageWriter contract asks; progress follows qemu's accounting as copy.ts does.
import { ImageError, type Image, type ImageWriter } from '../../formats/types.ts';
import { DriverWriteFailure } from '../../formats/writer-checks.ts';
import { ProgressRule } from '../../output/progress.ts';
import { failingChunk, nonZeroParts, runs, type Run } from './copy.ts';
import { ClusterAligner } from './to-image-aligner.ts';
import { salvageRead, type Salvage } from './salvage.ts';

export { ClusterAligner };

const MiB = 1024 * 1024;
/** qemu-img's IO_BUF_SIZE: its largest chunk. */
const QEMU_CHUNK = 2 * MiB;

export interface ImageCopyPlan {
  images: Image[];
  writer: ImageWriter;
  /** -S in bytes; 0 = write everything. */
  sparseSize: number;
  /** -c: whole clusters through writeCompressed. */
  compressed?: boolean;
  onProgress?: (done: number, total: number) => void;
  /** The writer takes qemu-img's requests as they come, not whole clusters. */
  unaligned?: boolean;
  /** --salvage: sectors that cannot be read are copied as zeros, and failed block status taken as data; both reported. */
  salvage?: Salvage;
  /** convert -n: qemu's write-zeroes requests (what -S skips, each zero chunk), in order among the writes. */
  onZeros?: (offset: number, length: number) => void;
  /** -C where qemu's copy_range serves (copy-offload.ts): data runs written whole, no zero detection in them. */
  offload?: boolean;
}

/**
 * -c: qemu-img convert writes whole target clusters, so it takes the block-status runs a cluster
 * at a time: a run shorter than a cluster becomes a whole cluster of data, a longer one is cut
 * down to whole clusters (its rest starts the next step).
 */
function* clusterRuns(image: Image, cs: number, salvage?: Salvage): Generator<Run> {
  for (let pos = 0; pos < image.virtualSize; ) {
    const first = runs(image, pos, image.virtualSize, salvage?.status).next();
    if (first.done) return;
    let { length, data } = first.value;
    if (data) length = Math.min(length, cs);
    if (length < cs) {
      length = Math.min(cs, image.virtualSize - pos);
      data = true;
    } else {
      length -= length % cs;
    }
    yield { pos, length, data };
    pos += length;
  }
}

/** Copies the disk into the writer; returns qemu's counted bytes. Does not call the writer's finish(). */
/** A request of qemu-img convert's that the target's driver failed: qemu names the start of its chunk. */
export class RequestFailed extends ImageError {
  constructor(readonly chunk: number, cause: DriverWriteFailure) {
    super(`error while writing at byte ${chunk}: ${cause.message}`, cause.errno);
  }
}

/**
 * The starts of qemu's chunks (data chunks, zero runs) whose writes may still be to come: an
 * in-place target fills the gaps before a write when it comes (in-place-copy.ts), so a failure
 * there belongs to an earlier chunk.
 */
class PendingChunks {
  private readonly starts: number[] = [];
  begin(start: number): void {
    this.starts.push(start);
  }
  /** A write returned: every chunk before the current one is written. */
  settled(): void {
    if (this.starts.length > 1) this.starts.splice(0, this.starts.length - 1);
  }
  /** The chunk a failed write at `offset` belongs to. */
  holding(offset: number): number {
    for (let i = this.starts.length - 1; i >= 0; i--) if (this.starts[i] <= offset) return this.starts[i];
    return this.starts[0] ?? offset;
  }
}

export function copyToImage(plan: ImageCopyPlan): number {
  const chunks = new PendingChunks();
  try {
    return copyChunks(plan, chunks);
  } catch (e) {
    if (e instanceof DriverWriteFailure) throw new RequestFailed(chunks.holding(e.offset), e);
    throw e;
  }
}

function copyChunks(plan: ImageCopyPlan, chunks: PendingChunks): number {
  const { images, sparseSize } = plan;
  const disk = images.reduce((n, i) => n + i.virtualSize, 0);
  // convert -n records qemu's requests as they are (to-image-into.ts): no aligning.
  const aligner = plan.unaligned ? plan.writer : new ClusterAligner(plan.writer, disk, !!plan.compressed);
  // -c: qemu skips a chunk (a whole cluster) only when all of it reads as zeros.
  const unit = plan.compressed ? (plan.writer.compressedClusterSize ?? plan.writer.clusterSize) : sparseSize;
  const zeroBlock = sparseSize === 0 || plan.offload ? 0 : unit;
  // -c: qemu's copy buffer is one cluster, its chunks (and progress steps) too.
  const chunkSize = plan.compressed ? Math.min(unit, QEMU_CHUNK) : QEMU_CHUNK;
  const counts = (r: Run) => r.data || sparseSize === 0;
  let total = 0;
  const walk = (image: Image) => (plan.compressed ? clusterRuns(image, unit, plan.salvage) : runs(image, 0, image.virtualSize, plan.salvage?.status));
  // qemu counts before it copies; that walk reports --salvage's failed block status too.
  if (plan.onProgress || plan.salvage) for (const image of images) for (const r of walk(image)) if (counts(r)) total += r.length;
  plan.onProgress?.(0, total);
  const rule = new ProgressRule();
  let done = 0;
  const buf = Buffer.allocUnsafe(QEMU_CHUNK);
  const zeros = Buffer.alloc(QEMU_CHUNK);
  let base = 0;
  for (const image of images) {
    for (const r of walk(image)) {
      // qemu cuts only data runs into chunks: a zero run is one write-zeroes request (its ends
      // decide which target clusters it covers whole: parallels discards them, qcow2 makes them zero clusters).
      if (!r.data && sparseSize !== 0) {
        chunks.begin(base + r.pos);
        plan.onZeros?.(base + r.pos, r.length);
        continue;
      }
      for (let pos = r.pos; pos < r.pos + r.length; ) {
        const n = Math.min(chunkSize, r.pos + r.length - pos);
        chunks.begin(base + pos);
        if (counts(r) && plan.onProgress) {
          done += n;
          if (rule.set((100 * done) / total) !== undefined) plan.onProgress(done, total);
        }
        if (r.data) {
          const chunk = buf.subarray(0, n);
          const known = Math.min(n, image.zeroRun?.(pos, n) ?? 0);
          chunk.fill(0, 0, known);
          try {
            if (known < n && plan.salvage) salvageRead(image, chunk.subarray(known), pos + known, plan.salvage.read);
            else if (known < n) image.read(chunk.subarray(known), pos + known);
          } catch (e) {
            // qemu's chunk may be shorter than this one (a VMDK grain's block status): the one that fails.
            if (e instanceof ImageError) throw new ImageError(`error while reading at byte ${base + (failingChunk(image, pos, pos, pos + n) ?? pos)}: ${e.message}`, e.errno);
            throw e;
          }
          let from = 0;
          for (const [s, e] of nonZeroParts(chunk, base + pos, zeroBlock, zeros)) {
            if (s > from) plan.onZeros?.(base + pos + from, s - from);
            aligner.write(chunk.subarray(s, e), base + pos + s);
            chunks.settled();
            from = e;
          }
          if (n > from) plan.onZeros?.(base + pos + from, n - from);
        } else {
          aligner.write(zeros.subarray(0, n), base + pos);
          chunks.settled();
        }
        pos += n;
      }
    }
    base += image.virtualSize;
  }
  aligner.finish();
  return total;
}
