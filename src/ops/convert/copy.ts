// The copy loop of `convert` to a raw target: walk each source's extents, read data runs in 1 MiB
// buffers, leave zero runs as holes (when the target already reads as zeros) and write the rest
// with positioned writes. Progress follows qemu-img's accounting: only data chunks count (zero
// ones too with -S 0), in chunks of at most 2 MiB, so a small image prints qemu's exact lines.
import { ImageError, type BlockDevice, type Extent, type Image } from '../../formats/types.ts';
import { ProgressRule } from '../../output/progress.ts';
import { isPowerOfTwo, qemuSparseParts } from './sparse-runs.ts';
import { outputWriteError, OverlappedWriter, WriteFailure } from './writer.ts';
import type { DiskRun } from './split.ts';
import { noticeOf, salvageRead, withoutStacks, type Salvage, type UnreadableReport } from './salvage.ts';

const MiB = 1024 * 1024;
/** I/O buffer: fits the per-core cache (FACTS.md: larger chunks copy slower). */
const IO_BYTES = MiB;
/** I/O buffers in flight: reading one while up to three are being written. */
const WRITE_SLOTS = 4;
/** qemu-img's IO_BUF_SIZE: the largest chunk its progress counts at once. */
const QEMU_CHUNK = 2 * MiB;
/**
 * Longest extent asked for at once: qemu-img convert's BDRV_REQUEST_MAX_SECTORS (INT_MAX >> 9
 * sectors, 2 GiB - 512), in 7.2 and 10.0. Runs end there, and progress chunks restart there.
 */
export const MAX_BLOCK_STATUS = 4194303 * 512;
const SECTOR = 512;

export interface CopyPlan {
  images: Image[];
  output: BlockDevice;
  /** -S in bytes; 0 = write everything (fully allocated output). */
  sparseSize: number;
  /** The target reads as zeros already (created by the host, or --target-is-zero). */
  targetIsZero: boolean;
  /** The part of the concatenated disk to copy, [start, end); the whole disk when absent. */
  range?: [number, number];
  /** Instead of `range`: the parts to copy, [start, end) each, in disk order (split.ts stripedRanges). */
  ranges?: readonly (readonly [number, number])[];
  /** Called when qemu would print a progress line (done/total of this range's counted bytes). */
  onProgress?: (done: number, total: number) => void;
  /** -m: qemu's copy coroutines (8 by default); with -p, how far its claimed chunks run ahead of a failed read. */
  coroutines?: number;
  /** The whole disk's runs, already walked (split.ts); used instead of a second walk when -p is off. */
  runs?: readonly DiskRun[];
  /**
   * Report every counted chunk, not only the lines this range's own rule would print: the host
   * replays the parts of several guests in disk order through one rule (open-copy.ts progressSum).
   */
  everyChunk?: boolean;
  /** --salvage: sectors that cannot be read are copied as zeros, and failed block status taken as data; both reported. */
  salvage?: Salvage;
  /** -C where qemu's copy_range serves (copy-offload.ts): data runs written whole, no zero detection in them. */
  offload?: boolean;
}

const zeros = Buffer.alloc(IO_BYTES);

/** One run of an image: its bytes are data to copy, or read as zeros. */
export interface Run {
  pos: number;
  length: number;
  data: boolean;
}

/**
 * qemu's convert counts in whole sectors: a block-status answer that ends inside a sector (a raw
 * file's end, whose last sector the disk rounds up) is taken as far as that sector's end, so the
 * bytes past the file's end are copied with the data before them (and extend a shorter -n target).
 */
const sectorEnd = (end: number): number => Math.ceil(end / SECTOR) * SECTOR;

/**
 * qemu's src_alignment: a source's cluster size (what `info` prints), at least a sector. qemu
 * ends a block-status run that passes a cluster boundary at the last one it passes (a backing
 * file's data ending inside an overlay's cluster is then two runs, two progress chunks).
 */
function sourceAlignment(image: Image): number {
  let cluster: unknown;
  try {
    cluster = image.info()['cluster-size'];
  } catch {
    cluster = undefined;
  }
  return typeof cluster === 'number' && Number.isSafeInteger(cluster) && cluster > SECTOR ? sectorEnd(cluster) : SECTOR;
}

const alignments = new WeakMap<Image, number>();

/**
 * One block-status request of qemu-img convert: `image.extent(pos, length)`, a failure worded as
 * qemu's error. `salvage` (--salvage): a failed request is asked again for a quarter of its
 * sectors, down to one, which is reported and answered undefined (qemu then takes it as data),
 * as qemu's convert_iteration_sectors does.
 */
export function convertExtent(image: Image, pos: number, length: number, salvage?: UnreadableReport): Extent | undefined {
  return salvage ? withoutStacks(() => retriedExtent(image, pos, length, salvage)) : retriedExtent(image, pos, length);
}

function retriedExtent(image: Image, pos: number, length: number, salvage?: UnreadableReport): Extent | undefined {
  let sectors = Math.ceil(length / SECTOR);
  // The driver's notice comes with its first failure, whichever of the retries that is.
  let notice: string | undefined;
  for (;;) {
    try {
      return image.extent(pos, Math.min(length, sectors * SECTOR));
    } catch (err) {
      if (!(err instanceof ImageError)) throw err;
      // qemu's wording, with the offset in the source (a backing file's failure included); the
      // driver's notice (qcow2's "Image is corrupt") stays with it: qemu prints it before the error.
      if (!salvage) throw Object.assign(new ImageError(`error while reading block status at offset ${pos}: ${err.message}`, err.errno), { warning: noticeOf(err) });
      notice ??= noticeOf(err);
      if (sectors > 1) {
        sectors = Math.ceil(sectors / 4);
        continue;
      }
      salvage(pos, SECTOR, err.message, notice);
      return undefined;
    }
  }
}

/** qemu-img convert's block-status runs of `image` over [from, to), as its copy loop takes them (`salvage`: convertExtent). */
export function* runs(image: Image, from: number, to: number, salvage?: UnreadableReport): Generator<Run> {
  let alignment = alignments.get(image);
  if (alignment === undefined) alignments.set(image, (alignment = sourceAlignment(image)));
  // qemu's driver answers end at its granule (a VMDK grain, a qcow2 L2 table's span) where
  // extent() may go on: its runs, and the chunks and progress steps cut from them, restart there.
  const granule = typeof image.blockStatus === 'number' && image.blockStatus > 0 ? image.blockStatus : 0;
  let pos = from;
  while (pos < to) {
    // Asked no further than the run can go: a driver's extent() may walk far past the granule
    // (a VMDK's grain tables over a mostly empty 40 GiB disk, one grain at a time otherwise).
    const granuleEnd = granule ? (Math.floor(pos / granule) + 1) * granule : Infinity;
    const e = convertExtent(image, pos, Math.min(to - pos, MAX_BLOCK_STATUS, granuleEnd - pos), salvage);
    if (e === undefined) {
      const length = Math.min(SECTOR, to - pos);
      yield { pos, length, data: true };
      pos += length;
      continue;
    }
    // A driver that reports nothing would loop forever: treat it as a broken image.
    if (!(e.length > 0)) throw new ImageError('Input/output error', 'EIO');
    let end = sectorEnd(pos + e.length);
    if (granule) end = Math.min(end, (Math.floor(pos / granule) + 1) * granule);
    const tail = end % alignment;
    if (end - pos > tail) end -= tail;
    const length = Math.min(end - pos, to - pos);
    // qemu's convert takes BDRV_BLOCK_ZERO first: data that a hole makes read as zeros (DATA|ZERO)
    // is written as zeros without being read, and does not count as copied for progress.
    yield { pos, length, data: e.kind === 'data' && !e.zeroData };
    pos += length;
  }
}

/**
 * Neighbouring runs of the same kind as one, so that drivers that report one grain or block at a
 * time are still read and written in big buffers. Only without -p: qemu's progress follows the
 * driver's own boundaries.
 */
function* merged(source: Generator<Run>): Generator<Run> {
  let pending: Run | undefined;
  for (const r of source) {
    if (pending && pending.data === r.data && pending.pos + pending.length === r.pos) {
      pending.length += r.length;
      continue;
    }
    if (pending) yield pending;
    pending = { ...r };
  }
  if (pending) yield pending;
}

/** The part [from, to) of a source at disk offset `base`, from runs already walked, merged. */
function* walked(all: readonly DiskRun[], base: number, from: number, to: number): Generator<Run> {
  // As runs() takes them: each from where the previous ended, to its sector's end.
  const source = function* (): Generator<Run> {
    let pos = from;
    for (const r of all) {
      const end = Math.min(sectorEnd(r.start + r.length - base), to);
      if (end <= pos) continue;
      yield { pos, length: end - pos, data: r.data };
      pos = end;
    }
  };
  yield* merged(source());
}

/**
 * qemu's chunking of one run for progress: at most 2 MiB, wherever that ends (measured: a run of
 * 5 KiB is one chunk, and one of 3 MiB from 4 KiB is 2 MiB then 1 MiB, with -S 4k and 64k alike).
 */
function chunkLength(remaining: number): number {
  return Math.min(remaining, QEMU_CHUNK);
}

/** Byte ranges [source, from, to, outputBase] of each source inside the copy's range(s), in disk order. */
function pieces(plan: CopyPlan): [Image, number, number, number][] {
  const total = plan.images.reduce((n, i) => n + i.virtualSize, 0);
  const out: [Image, number, number, number][] = [];
  for (const [start, end] of plan.ranges ?? [plan.range ?? [0, total]]) {
    let base = 0;
    for (const image of plan.images) {
      const from = Math.max(start - base, 0);
      const to = Math.min(end - base, image.virtualSize);
      if (from < to) out.push([image, from, to, base]);
      base += image.virtualSize;
    }
  }
  return out;
}

/** The parts of `buf` (at output offset `at`) to write: all of it, or its runs of non-zero sparse-size blocks. */
function dataParts(buf: Buffer, at: number, sparse: number, skipZeros: boolean): [number, number][] {
  return skipZeros ? nonZeroParts(buf, at, sparse, zeros) : [[0, buf.length]];
}

/**
 * [start, end) parts of `buf` (output offset `at`) that are not all zeros, by -S blocks aligned to
 * the output offset as qemu's zero detection is; runs of data coalesced. `zeros` is at least as
 * long as `buf`. The target-image copy (to-image-copy.ts) uses it too.
 */
export function nonZeroParts(buf: Buffer, at: number, sparse: number, zeros: Buffer): [number, number][] {
  if (sparse === 0) return [[0, buf.length]];
  if (buf.equals(zeros.subarray(0, buf.length))) return [];
  if (!isPowerOfTwo(sparse) && at % 512 === 0) return qemuSparseParts(buf, at, sparse);
  const parts: [number, number][] = [];
  let runStart = -1;
  for (let pos = 0; pos < buf.length;) {
    const blockEnd = Math.min(buf.length, (Math.floor((at + pos) / sparse) + 1) * sparse - at);
    // A non-zero first or last byte settles most data blocks without a native call (~10x faster on data).
    const isZero = buf[pos] === 0 && buf[blockEnd - 1] === 0 && buf.compare(zeros, 0, blockEnd - pos, pos, blockEnd) === 0;
    if (isZero && runStart >= 0) {
      parts.push([runStart, pos]);
      runStart = -1;
    } else if (!isZero && runStart < 0) runStart = pos;
    pos = blockEnd;
  }
  if (runStart >= 0) parts.push([runStart, buf.length]);
  return parts;
}

function writeZeros(out: BlockDevice, at: number, length: number): void {
  for (let done = 0; done < length; done += IO_BYTES) out.write!(zeros.subarray(0, Math.min(IO_BYTES, length - done)), at + done);
}

const chunkBuffer = Buffer.alloc(QEMU_CHUNK);

/**
 * The parts of qemu's chunk [pos, pos + n) of `image` (disk offset `base`) that it writes for a
 * -S of no power of two, relative to the chunk; undefined when the chunk cannot be read (the
 * copy's own read then fails as it should).
 */
function qemuChunkParts(image: Image, pos: number, n: number, base: number, sparse: number): [number, number][] | undefined {
  const chunk = chunkBuffer.subarray(0, n);
  try {
    image.read(chunk, pos);
  } catch {
    return undefined;
  }
  return qemuSparseParts(chunk, base + pos, sparse);
}

/** The parts that fall in [offset, offset + length), relative to that slice. */
function partsWithin(parts: [number, number][], offset: number, length: number): [number, number][] {
  const out: [number, number][] = [];
  for (const [s, e] of parts) {
    const from = Math.max(s, offset);
    const to = Math.min(e, offset + length);
    if (from < to) out.push([from - offset, to - offset]);
  }
  return out;
}

/** Copies the plan's range; returns the number of counted (progress) bytes. */
export async function copyToRaw(plan: CopyPlan): Promise<number> {
  const { output, sparseSize } = plan;
  if (!output.write) throw new ImageError('the output is not writable');
  const skipZeros = plan.targetIsZero && sparseSize > 0;
  // Zeros found inside data runs are skipped only where qemu reads them (not with -C's copy_range).
  const detectZeros = skipZeros && !plan.offload;
  const counts = (r: Run) => r.data || sparseSize === 0;
  const parts = pieces(plan);

  // qemu counts the bytes it will copy before it starts (that walk reports --salvage's failed block status too).
  const status = plan.salvage?.status;
  let total = 0;
  if (plan.onProgress || status) for (const [image, from, to] of parts) for (const r of runs(image, from, to, status)) if (counts(r)) total += r.length;
  // Nothing copied yet, the walk done: the host prints no line before every guest has walked its
  // part, as qemu's walk of the whole disk precedes its first line (and may fail instead).
  plan.onProgress?.(0, total);
  const rule = new ProgressRule();
  let done = 0;

  // qemu's coroutines print a chunk's line when they claim it, before reading it; when a read
  // fails, the others have claimed (and printed) the next chunks already: `ahead` of them, as
  // its copy loop typically stands (its default 8 coroutines; the reads end in order).
  let failed: ImageError | undefined;
  let ahead = Math.max(0, (plan.coroutines ?? 8) - 1);
  const claim = (n: number) => {
    done += n;
    if (rule.set((100 * done) / total) !== undefined || plan.everyChunk) plan.onProgress!(done, total);
  };

  // -S of no power of two: what qemu skips depends on where its chunks start (sparse-runs.ts).
  const exactChunks = detectZeros && !isPowerOfTwo(sparseSize);
  const writer = new OverlappedWriter(output, WRITE_SLOTS, IO_BYTES);
  try {
    for (const [image, from, to, base] of parts) {
      // --salvage: qemu's runs as they come, so that each failed sector's warnings come in its order.
      const walk = plan.onProgress || status || exactChunks ? runs(image, from, to, status) : plan.runs ? walked(plan.runs, base, from, to) : merged(runs(image, from, to));
      for (const r of walk) {
        let pos = r.pos;
        const end = r.pos + r.length;
        while (pos < end) {
          const n = counts(r) ? chunkLength(end - pos) : end - pos;
          if (failed) {
            if (!counts(r)) break;
            if (ahead-- <= 0) throw failed;
            claim(n);
            pos += n;
            continue;
          }
          if (counts(r) && plan.onProgress) claim(n);
          if (r.data) {
            const chunkParts = exactChunks ? qemuChunkParts(image, pos, n, base, sparseSize) : undefined;
            for (let at = pos; at < pos + n; at += IO_BYTES) {
              const length = Math.min(IO_BYTES, pos + n - at);
              const sliceParts = chunkParts && partsWithin(chunkParts, at - pos, length);
              if (sliceParts && sliceParts.length === 0) continue;
              // Bytes the image knows read as zeros (qemu reads them, then finds them zero): not read here.
              const zeros = Math.min(length, image.zeroRun?.(at, length) ?? 0);
              if (zeros === length && detectZeros && !sliceParts) continue;
              const buf = await writer.buffer();
              const piece = buf.subarray(0, length);
              piece.fill(0, 0, zeros);
              try {
                if (zeros < length && plan.salvage) salvageRead(image, piece.subarray(zeros), at + zeros, plan.salvage.read);
                else if (zeros < length) image.read(piece.subarray(zeros), at + zeros);
              } catch (e) {
                writer.submit(buf, [], 0);
                if (!(e instanceof ImageError)) throw e;
                // -p: this chunk is qemu's; merged runs: find qemu's chunk that fails.
                // A run cut by the start of this part (a stripe) began before it: qemu's chunks are cut from its true start.
                const cut = r.pos === from && from > 0;
                const chunk = plan.onProgress ? pos : failingChunk(image, cut ? 0 : r.pos, at, at + length) ?? at;
                failed = new ImageError(`error while reading at byte ${base + chunk}: ${e.message}`, e.errno);
                // Without -p nothing is claimed ahead that shows.
                if (!plan.onProgress) throw failed;
                break;
              }
              writer.submit(buf, sliceParts ?? dataParts(piece, base + at, sparseSize, detectZeros), base + at, base + pos);
            }
          } else if (!skipZeros) {
            try {
              writeZeros(output, base + pos, n);
            } catch (e) {
              const code = (e as NodeJS.ErrnoException).code;
              throw typeof code === 'string' ? outputWriteError(base + pos, code) : e;
            }
          }
          pos += n;
        }
      }
    }
    if (failed) throw failed;
  } catch (e) {
    // No write may land after the op has ended (the host then closes, and may remove, the file).
    await writer.drain().catch(() => {});
    throw writeFailureInQemuWords(e);
  }
  try {
    await writer.drain();
  } catch (e) {
    throw writeFailureInQemuWords(e);
  }
  return total;
}

/** A failed output write as qemu-img convert reports it: the start of its request that failed. */
function writeFailureInQemuWords(e: unknown): unknown {
  return e instanceof WriteFailure ? outputWriteError(e.chunk, e.code ?? 'EIO') : e;
}

/**
 * qemu reads one chunk (at most 2 MiB, cut from the start of each of its block-status runs) at a
 * time and names the chunk whose read fails; the copy here reads 1 MiB buffers, of runs merged
 * without -p. The start of the first of qemu's chunks of the run from `runStart` that overlaps
 * [from, to) and fails as a whole (a cloop or dmg block further in it fails the whole read).
 */
export function failingChunk(image: Image, runStart: number, from: number, to: number): number | undefined {
  // runs() ends each run at the driver's granule (a VMDK grain), where qemu's chunks restart too.
  for (const r of runs(image, runStart, to)) {
    if (!r.data) continue;
    for (let pos = r.pos; pos < r.pos + r.length; ) {
      const n = chunkLength(r.pos + r.length - pos);
      if (pos + n > from) {
        try {
          image.read(Buffer.allocUnsafe(n), pos);
        } catch {
          return pos;
        }
      }
      pos += n;
    }
  }
  return undefined;
}
