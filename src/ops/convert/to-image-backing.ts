// convert -B (a backing file for the target): qemu-img copies only what the source's top layer
// has. Its block status is asked of the top image alone: what the top leaves unallocated (over a
// backing file of its own) reads from the target's backing file and is not written; what the top says reads as zeros is written
// as zeros (a zero cluster) unless it lies past the end of the target's backing file, which reads
// as zeros there anyway; data is copied, its -S blocks of zeros written as zeros too (the target
// does not read as zeros: it has a backing file).
import { ImageError, type Image, type ImageWriter } from '../../formats/types.ts';
import { ProgressRule } from '../../output/progress.ts';
import { convertExtent, MAX_BLOCK_STATUS, nonZeroParts } from './copy.ts';
import { ClusterAligner } from './to-image-aligner.ts';
import { salvageRead, type Salvage } from './salvage.ts';

const CHUNK = 2 * 1024 * 1024;
const SECTOR = 512;

export interface BackingCopyPlan {
  image: Image;
  writer: ImageWriter;
  sparseSize: number;
  /** The virtual size of the target's backing file (qemu's target_backing_sectors, in bytes). */
  backingSize: number;
  /** The target's backing file, opened: copy-on-write reads it for clusters the copy covers in part. */
  backingImage?: Image;
  onProgress?: (done: number, total: number) => void;
  /** --salvage: sectors that cannot be read are copied as zeros, and failed block status taken as data; both reported. */
  salvage?: Salvage;
}

type Kind = 'data' | 'zero' | 'backing';

/** A data chunk of the top, read through its chain (--salvage: unreadable sectors as zeros, reported). */
function readChunk(plan: BackingCopyPlan, chunk: Buffer, pos: number): void {
  if (plan.salvage) salvageRead(plan.image, chunk, pos, plan.salvage.read);
  else plan.image.read(chunk, pos);
}

/** The top layer's runs, as qemu's convert sees them with a target backing file. */
function* topRuns(image: Image, backingSize: number, from = 0, salvage?: Salvage): Generator<{ pos: number; length: number; kind: Kind }> {
  // Where a top with no backing file of its own has nothing, it reads as zeros, and qemu's block
  // layer says so (BDRV_BLOCK_ZERO): written as zeros over the target's backing file, not skipped.
  const unallocated: Kind = image.info()['backing-filename'] === undefined ? 'zero' : 'backing';
  for (let pos = from; pos < image.virtualSize; ) {
    const e = convertExtent(image, pos, Math.min(image.virtualSize - pos, MAX_BLOCK_STATUS), salvage?.status);
    if (e === undefined) {
      // --salvage: a sector whose block status failed is data.
      yield { pos, length: Math.min(SECTOR, image.virtualSize - pos), kind: 'data' };
      pos += SECTOR;
      continue;
    }
    if (!(e.length > 0)) throw new ImageError('Input/output error', 'EIO');
    let length = Math.min(Math.ceil((pos + e.length) / SECTOR) * SECTOR, image.virtualSize) - pos;
    // qemu cuts a run at the end of the target's backing file: the zeros past it are not written.
    if (pos < backingSize && pos + length > backingSize) length = backingSize - pos;
    let kind: Kind = e.depth > 0 ? 'backing' : e.kind === 'unallocated' ? unallocated : e.kind === 'zero' || e.zeroData ? 'zero' : 'data';
    // Zeros past the target's backing file read as zeros already.
    if (kind === 'zero' && pos >= backingSize) kind = 'backing';
    yield { pos, length, kind };
    pos += length;
  }
}

/**
 * -c with a backing file for the target: qemu-img takes whole target clusters (a run shorter than
 * a cluster becomes a cluster of data, read through the source's whole chain); a data cluster is
 * written compressed, or as a zero cluster when it reads as zeros; zeros are zero clusters.
 */
function* compressedSteps(plan: BackingCopyPlan, cs: number): Generator<{ pos: number; length: number; kind: Kind }> {
  const { image } = plan;
  for (let pos = 0; pos < image.virtualSize; ) {
    const first = topRuns(image, plan.backingSize, pos, plan.salvage).next();
    if (first.done) break;
    let { length, kind } = first.value;
    if (kind === 'data') length = Math.min(length, cs);
    if (length < cs) {
      length = Math.min(cs, image.virtualSize - pos);
      kind = 'data';
    } else {
      length -= length % cs;
    }
    yield { pos, length, kind };
    pos += length;
  }
}

function copyCompressedOverBacking(plan: BackingCopyPlan): number {
  const { writer } = plan;
  const cs = writer.compressedClusterSize ?? writer.clusterSize;
  // qemu walks the disk to count, then again to copy (--salvage's block-status warnings come in both).
  let total = 0;
  if (plan.onProgress || plan.salvage) for (const r of compressedSteps(plan, cs)) total += r.kind === 'data' ? r.length : 0;
  plan.onProgress?.(0, total);
  const rule = new ProgressRule();
  let done = 0;
  const buf = Buffer.allocUnsafe(cs);
  const zeros = Buffer.alloc(cs);
  const zeroes = (offset: number, length: number) => {
    if (writer.writeZeroes) return writer.writeZeroes(offset, length);
    for (let at = 0; at < length; at += cs) writer.write(zeros.subarray(0, Math.min(cs, length - at)), offset + at);
  };
  for (const r of compressedSteps(plan, cs)) {
    if (r.kind === 'backing') continue;
    if (r.kind === 'zero') {
      zeroes(r.pos, r.length);
      continue;
    }
    for (let pos = r.pos; pos < r.pos + r.length; pos += cs) {
      const chunk = buf.subarray(0, Math.min(cs, r.pos + r.length - pos));
      if (plan.onProgress) {
        done += chunk.length;
        if (rule.set((100 * done) / total) !== undefined) plan.onProgress(done, total);
      }
      try {
        readChunk(plan, chunk, pos);
      } catch (e) {
        if (e instanceof ImageError) throw new ImageError(`error while reading at byte ${pos}: ${e.message}`, e.errno);
        throw e;
      }
      if (chunk.equals(zeros.subarray(0, chunk.length))) zeroes(pos, chunk.length);
      else writer.writeCompressed!(chunk, pos);
    }
  }
  return total;
}

export function copyOverBacking(plan: BackingCopyPlan & { compressed?: boolean }): number {
  if (plan.compressed) return copyCompressedOverBacking(plan);
  const { image, sparseSize } = plan;
  const aligner = new ClusterAligner(plan.writer, image.virtualSize, false, true, plan.backingImage);
  const counts = (kind: Kind) => kind === 'data' || (kind === 'zero' && sparseSize === 0);
  let total = 0;
  // qemu counts before it copies; that walk reports --salvage's failed block status too.
  if (plan.onProgress || plan.salvage) for (const r of topRuns(image, plan.backingSize, 0, plan.salvage)) if (counts(r.kind)) total += r.length;
  plan.onProgress?.(0, total);
  const rule = new ProgressRule();
  let done = 0;
  const buf = Buffer.allocUnsafe(CHUNK);
  const zeros = Buffer.alloc(CHUNK);
  for (const r of topRuns(image, plan.backingSize, 0, plan.salvage)) {
    if (r.kind === 'backing') continue;
    // qemu-img cuts only what it reads into 2 MiB chunks: a zero run is one write-zeroes request.
    if (r.kind === 'zero' && sparseSize !== 0) {
      aligner.zero(r.pos, r.length);
      continue;
    }
    for (let pos = r.pos; pos < r.pos + r.length; ) {
      const n = Math.min(CHUNK, r.pos + r.length - pos);
      if (counts(r.kind) && plan.onProgress) {
        done += n;
        if (rule.set((100 * done) / total) !== undefined) plan.onProgress(done, total);
      }
      if (r.kind === 'zero') {
        if (sparseSize === 0) aligner.write(zeros.subarray(0, n), pos);
        else aligner.zero(pos, n);
      } else {
        const chunk = buf.subarray(0, n);
        try {
          readChunk(plan, chunk, pos);
        } catch (e) {
          if (e instanceof ImageError) throw new ImageError(`error while reading at byte ${pos}: ${e.message}`, e.errno);
          throw e;
        }
        let at = 0;
        for (const [s, e] of nonZeroParts(chunk, pos, sparseSize, zeros)) {
          if (s > at) aligner.zero(pos + at, s - at);
          aligner.write(chunk.subarray(s, e), pos + s);
          at = e;
        }
        if (at < n) aligner.zero(pos + at, n - at);
      }
      pos += n;
    }
  }
  aligner.finish();
  return total;
}
