// The guest half of `bench`: opens the image (any format, backing chain included) and issues
// qemu-img bench's requests one after another: `count` reads (or writes of the pattern byte) of
// `bufsize` bytes, the first at `offset`, each next one `step` further, wrapping modulo the
// image's size as qemu 7.2's and 10.0's bench_cb do (a request can then pass the end). qemu
// keeps `depth` of them in flight; their offsets, and which of them fail, do not depend on that.
// Writes go where qemu writes in place (a raw image's file, a qcow2 image's allocated data
// clusters) one request at a time; a qcow2 run that allocates is planned whole and applied in
// crash-safe steps (bench-allocate.ts); other formats are refused before anything is written.
import { ImageError, type BlockDevice, type Image, type OpenContext } from '../formats/types.ts';
import { openTree } from './open-tree.ts';
import type { Op } from './types.ts';
import { strerror } from '../strerror.ts';
import { writeAllocating } from './bench-allocate.ts';
import { PlanRefusal } from '../formats/qcow2/refcount-update.ts';

export interface BenchOptions {
  format?: string;
  fileName: string;
  unsafeQuirks?: boolean;
  profile?: OpenContext['profile'];
  secrets?: Record<number, string>;
  write: boolean;
  count: number;
  bufsize: number;
  step: number;
  /** Decimal: up to INT64_MAX. */
  offset: string;
  pattern: number;
  /** 7.2: the wrap divides by the size, and an empty image crashes qemu-img (SIGFPE) at its first request. */
  zeroSizeFaults?: boolean;
}

/**
 * What the guest answers: the format it opened (the host warns about a probed raw image opened
 * for writing), then the run's outcome. `failed` is strerror of the first failing request; qemu
 * exits at once then.
 */
export type BenchResult =
  | { format: string; sizeFailed: true }
  | { format: string; refused: string }
  | { format: string; failed: string }
  | { format: string; faulted: true }
  | { format: string; seconds: number };

/** Bytes moved per read or write call: a large request is done in pieces of one reused buffer. */
const PIECE = 1024 * 1024;

/** One request of the run: its offset, or how the run ends before it (out of range: EIO; 7.2's empty image: SIGFPE). */
type Request = { at: number } | { end: 'failed' | 'faulted' };

/** qemu's requests in order: `count` offsets from `offset`, each next `step` further modulo the size. */
function* requests(o: BenchOptions, size: bigint): Generator<Request> {
  const bufsize = BigInt(o.bufsize);
  let offset = BigInt(o.offset);
  for (let i = 0; i < o.count; i++) {
    // qemu computes the next offset before it sends a request: 7.2's division by 0 comes first.
    if (size === 0n && o.zeroSizeFaults) return yield { end: 'faulted' };
    // blk_check_byte_request: a request past the end fails with EIO.
    if (offset > size || size - offset < bufsize) return yield { end: 'failed' };
    yield { at: Number(offset) };
    // 7.2 and 10.0 wrap modulo the size itself (later qemu wraps before the last request that
    // fits), so a request that wraps near the end can pass it and fail.
    offset = size === 0n ? 0n : (offset + BigInt(o.step)) % size;
  }
}

/**
 * Where [at, at + length) of the disk lies in the image's own file, as [file offset, length] runs,
 * when writing there in place is all qemu does: a raw image (the file is the disk), or a qcow2
 * image whose bytes there are allocated data clusters of its own, not compressed, not encrypted,
 * not zero-flagged, not in a data file. Undefined otherwise (qemu would allocate or change metadata).
 */
function inPlaceRuns(image: Image, at: number, length: number): [number, number][] | undefined {
  if (image.format === 'raw') return [[at, length]];
  // A dirty image qemu repairs when it opens it read-write; bitmaps it rewrites when it closes it.
  const info = image.info();
  if (image.format !== 'qcow2' || info.encrypted || info['dirty-flag'] || (image.persistentBitmaps?.length ?? 0) > 0) return undefined;
  const runs: [number, number][] = [];
  for (let pos = at; pos < at + length; ) {
    const e = image.extent(pos, at + length - pos);
    if (e.kind !== 'data' || e.depth !== 0 || e.compressed || e.zeroData || e.file !== undefined || e.hostOffset === undefined || !(e.length > 0)) return undefined;
    const n = Math.min(e.length, at + length - pos);
    runs.push([e.hostOffset, n]);
    pos += n;
  }
  return runs;
}

/** The errno text qemu prints for a failed request (a driver's own wording never reaches it). */
function failure(e: unknown): string {
  const code = e instanceof ImageError ? e.errno ?? 'EIO' : (e as NodeJS.ErrnoException).code;
  if (typeof code !== 'string') throw e;
  return strerror(code);
}

/**
 * A -w run on a qcow2 image that allocates clusters (bench-allocate.ts). A run with a failing
 * request writes nothing: qemu-img exits at the failure without flushing its metadata caches, so
 * none of its allocations become visible (with the failure among the first `depth` requests it
 * has written nothing at all by then; later, only data past the image's end and an empty L2 table).
 */
function allocatingRun(o: BenchOptions, image: Image, file: BlockDevice, size: bigint, refused: BenchResult): BenchResult {
  const { format } = image;
  const info = image.info();
  const clusterSize = info['cluster-size'];
  if (format !== 'qcow2' || typeof clusterSize !== 'number') return refused;
  // Bitmaps would record the writes; encrypted clusters take the key's cipher.
  if (info.encrypted || (image.persistentBitmaps?.length ?? 0) > 0) return { format, refused: "instar's bench -w does not allocate in a qcow2 image with persistent bitmaps or encryption; nothing was written" };
  const offsets: number[] = [];
  let end: { end: 'failed' | 'faulted' } | undefined;
  for (const r of requests(o, size)) {
    if ('at' in r) offsets.push(r.at);
    else end = r;
  }
  if (end) return end.end === 'faulted' ? { format, faulted: true } : { format, failed: 'Input/output error' };
  const started = performance.now();
  try {
    writeAllocating(image, file, clusterSize, offsets, o.bufsize, o.pattern);
  } catch (e) {
    if (e instanceof PlanRefusal) return { format, refused: e.message };
    return { format, failed: failure(e) };
  }
  return { format, seconds: (performance.now() - started) / 1000 };
}

export const benchOp: Op = (options, ctx) => {
  const o = options as unknown as BenchOptions;
  const counts = [o.count, o.bufsize, o.step, o.pattern];
  if (!counts.every((n) => Number.isSafeInteger(n) && n >= 0) || !/^\d{1,19}$/.test(o.offset)) throw new ImageError('malformed bench options');
  const image = openTree(ctx, 0, { format: o.format, fileName: o.fileName, unsafeQuirks: o.unsafeQuirks, profile: o.profile, secrets: o.secrets ?? {} });
  const format = image.format;
  if (image.sizeFailure) return { format, sizeFailed: true } satisfies BenchResult;
  const file = ctx.devices[0].dev;
  const size = BigInt(image.virtualSize);
  const refused = { format, refused: `instar's bench -w writes to raw and qcow2 images only (this is ${format}); nothing was written` } satisfies BenchResult;
  if (o.write) {
    // Every request checked before anything is written: a run instar cannot do is not begun.
    const seen = new Set<number>();
    let allocates = false;
    for (const r of requests(o, size)) {
      if (!('at' in r) || seen.has(r.at)) continue;
      seen.add(r.at);
      try {
        if (!file.write) return refused;
        allocates ||= inPlaceRuns(image, r.at, o.bufsize) === undefined;
      } catch (e) {
        return { format, failed: failure(e) } satisfies BenchResult;
      }
    }
    if (allocates) return allocatingRun(o, image, file, size, refused);
  }
  const buf = Buffer.alloc(Math.min(o.bufsize, PIECE), o.pattern);
  const started = performance.now();
  for (const r of requests(o, size)) {
    if (!('at' in r)) return r.end === 'faulted' ? ({ format, faulted: true } satisfies BenchResult) : ({ format, failed: 'Input/output error' } satisfies BenchResult);
    try {
      if (o.write) {
        for (const [host, length] of inPlaceRuns(image, r.at, o.bufsize)!) {
          for (let done = 0; done < length; done += buf.length) file.write!(buf.subarray(0, Math.min(buf.length, length - done)), host + done);
        }
      } else {
        for (let done = 0; done < o.bufsize; done += buf.length) image.read(buf.subarray(0, Math.min(buf.length, o.bufsize - done)), r.at + done);
      }
    } catch (e) {
      return { format, failed: failure(e) } satisfies BenchResult;
    }
  }
  return { format, seconds: (performance.now() - started) / 1000 } satisfies BenchResult;
};
