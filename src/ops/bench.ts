// The guest half of `bench`: opens the image (any format, backing chain included) and issues
// qemu-img bench's requests one after another: `count` reads (or writes of the pattern byte) of
// `bufsize` bytes, the first at `offset`, each next one `step` further, wrapping modulo the
// image's size as qemu 7.2's and 10.0's bench_cb do (a request can then pass the end). qemu
// keeps `depth` of them in flight; their offsets, and which of them fail, do not depend on that.
// Writes go only to raw images, straight to the file (which is the disk): instar has no in-place
// writer for other formats yet.
import { ImageError, type OpenContext } from '../formats/types.ts';
import { openTree } from './open-tree.ts';
import type { Op } from './types.ts';
import { strerror } from '../strerror.ts';

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

export const benchOp: Op = (options, ctx) => {
  const o = options as unknown as BenchOptions;
  const counts = [o.count, o.bufsize, o.step, o.pattern];
  if (!counts.every((n) => Number.isSafeInteger(n) && n >= 0) || !/^\d{1,19}$/.test(o.offset)) throw new ImageError('malformed bench options');
  const image = openTree(ctx, 0, { format: o.format, fileName: o.fileName, unsafeQuirks: o.unsafeQuirks, profile: o.profile, secrets: o.secrets ?? {} });
  const format = image.format;
  if (image.sizeFailure) return { format, sizeFailed: true } satisfies BenchResult;
  const file = ctx.devices[0].dev;
  if (o.write && (format !== 'raw' || !file.write)) {
    return { format, refused: `instar writes only raw images in place; bench -w on a ${format} image is not supported yet` } satisfies BenchResult;
  }
  const size = BigInt(image.virtualSize);
  const bufsize = BigInt(o.bufsize);
  const buf = Buffer.alloc(Math.min(o.bufsize, PIECE), o.pattern);
  let offset = BigInt(o.offset);
  const started = performance.now();
  for (let i = 0; i < o.count; i++) {
    // qemu computes the next offset before it sends a request: 7.2's division by 0 comes first.
    if (size === 0n && o.zeroSizeFaults) return { format, faulted: true } satisfies BenchResult;
    // blk_check_byte_request: a request past the end fails with EIO.
    if (offset > size || size - offset < bufsize) return { format, failed: 'Input/output error' } satisfies BenchResult;
    const at = Number(offset);
    for (let done = 0; done < o.bufsize; done += buf.length) {
      const piece = buf.subarray(0, Math.min(buf.length, o.bufsize - done));
      try {
        if (o.write) file.write!(piece, at + done);
        else image.read(piece, at + done);
      } catch (e) {
        // qemu prints strerror of the request's errno: a driver's own wording is not what it shows.
        const code = e instanceof ImageError ? e.errno ?? 'EIO' : (e as NodeJS.ErrnoException).code;
        if (typeof code !== 'string') throw e;
        return { format, failed: strerror(code) } satisfies BenchResult;
      }
    }
    // 7.2 and 10.0 wrap modulo the size itself (later qemu wraps before the last request that
    // fits), so a request that wraps near the end can pass it and fail.
    offset = size === 0n ? 0n : (offset + BigInt(o.step)) % size;
  }
  return { format, seconds: (performance.now() - started) / 1000 } satisfies BenchResult;
};
