// The guest half of `convert` (raw target). Phases, one guest launch each:
//  - 'open': open every source (asking the host for backing files, data files, extents) and the
//    -l snapshot view, and answer the virtual sizes, before the host creates anything;
//  - 'copy': the same opening, then the copy of `range` into the output device the host created;
//  - 'open-copy': both in one launch, into a target the host has just created empty: open
//    failures are answered as in 'open', then guest `worker` of `workers` sizes the target (guest
//    0) and copies its own part (split.ts: balanced by work). The host starts all of them at once.
import { ImageError, type Image, type OpenContext } from '../formats/types.ts';
import { MissingFilesError } from './open-tree.ts';
import { firstBlockStatusFailure, openSource, sectorTotalIsNegative, snapshotViews, type ConvertSource, type SnapshotChoice } from './convert/sources.ts';
import { copyToRaw } from './convert/copy.ts';
import { balancedShare, progressShare, stripedRanges, type DiskRun } from './convert/split.ts';
import { allocateFirstBlock } from '../formats/raw/first-block.ts';
import { offloadsFrom } from './convert/copy-offload.ts';
import { salvageMessages } from './convert/salvage.ts';
import { errorWarnings } from '../guest/describe-error.ts';
import type { Op } from './types.ts';
import { strerrorNumber } from '../strerror-number.ts';

export interface ConvertOptions {
  phase: 'open' | 'copy' | 'open-copy';
  sources: ConvertSource[];
  snapshot?: SnapshotChoice;
  unsafeQuirks?: boolean;
  profile?: OpenContext['profile'];
  /** -S in bytes (0: write everything). */
  sparseSize?: number;
  /** The output reads as zeros already (created by the host, or -n --target-is-zero). */
  targetIsZero?: boolean;
  /** 'open' (for -n): walk every source's block status, as qemu does before it writes anything. */
  walkBlockStatus?: boolean;
  /**
   * With walkBlockStatus: the -n target's size when the host looked (capped at 2^53 - 1). A disk
   * larger than that fails qemu's size check before any block status, so there is nothing to walk
   * (and the walk of an exabyte qcow2 would not end).
   */
  targetSize?: number;
  /** [start, end) of the concatenated disk this guest copies. */
  range?: [number, number];
  /** 'open-copy': which guest this is, of how many (each computes its own range). */
  worker?: number;
  workers?: number;
  /** 'open-copy' without -p: 'striped' takes stripedRanges' stripes instead of balancedShare's weighed parts (split.ts). */
  share?: 'striped' | 'weighed';
  progress?: boolean;
  /** -C: copy offloading asked for (convert/copy-offload.ts decides where qemu's drivers serve it). */
  copyRange?: boolean;
  /** -m: qemu's copy coroutines (copy.ts CopyPlan.coroutines). */
  coroutines?: number;
  /** Keys of encrypted sources, base64 by device index (host-read --object secrets). */
  secrets?: Record<number, string>;
  /** --salvage: unreadable sectors are copied as zeros and reported (convert/salvage.ts). */
  salvage?: boolean;
}

/**
 * What the 'open' phase answers: sizes, or which source failed and how (worded by the host), or
 * qemu's message for a source whose sector count is negative (printed as it is). With the sizes,
 * `blockStatus` is qemu's message when a block status will fail in qemu's pass over the disk,
 * after the target is made or opened; `unsized` when that is because a source's size query fails:
 * its sector count passes INT64_MAX / 512, so -n's size check fails first.
 */
export type ConvertOpenResult =
  /** backed: a source has a backing file (what -n -B into a raw target cannot take yet). */
  | { sizes: WireSize[]; blockStatus?: string; unsized?: boolean; backed?: true }
  /** The int64 sector total is negative (sources.ts): qemu copies nothing and succeeds. */
  | { sizes: WireSize[]; nothingToCopy: true }
  | { failed: { source: number; message: string } }
  | { snapshotFailed: string }
  | { sizeFailed: string };

/**
 * What 'open-copy' answers: an open failure as 'open' does, the errno code of a target that
 * cannot take the disk's size (qemu's "Could not create"), or the sizes and the counted bytes.
 */
export type ConvertOpenCopyResult =
  | Exclude<ConvertOpenResult, { sizes: WireSize[] }>
  | { createFailed: string }
  | { sizes: number[]; counted: number }
  /** The disk passes 2^53 bytes: nothing done; the host takes the two rounds, which word that as qemu. */
  | { sizes: WireSize[]; tooLarge: true };

/**
 * A virtual size as it crosses the pipe: a safe integer as a number, a larger one (a qcow2 of
 * 16 PiB, a wrapped size past 2^53) as its exact decimal (protocol INT64_DECIMAL), which a JSON
 * number would round. The host reads them back as bigints.
 */
export type WireSize = number | string;

/**
 * A source's size exactly: its wrapped byte size when its size query fails with EFBIG (what qemu
 * sizes the target with; a driver's number may have rounded it past 2^53), else its virtual size.
 */
function exactSize(image: Image): bigint {
  const count = image.sizeFailure?.sectorCount;
  return count !== undefined ? BigInt.asUintN(64, count * 512n) : BigInt(image.virtualSize);
}

const wireSizes = (images: Image[]): WireSize[] => images.map((image) => {
  const size = exactSize(image);
  return size <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(size) : size.toString();
});

/** Whether the concatenated disk's offsets are all exact JS numbers (the copy's arithmetic). */
const safeDisk = (images: Image[]): boolean => images.reduce((n, image) => n + exactSize(image), 0n) <= BigInt(Number.MAX_SAFE_INTEGER);

/** qemu's message when a block status fails in its pass over the disk, before anything is written. */
export const blockStatusFailure = (offset: number, reason: string): string => `error while reading block status at offset ${offset}: ${reason}`;

/** Whether the disk fits a -n target of `size` bytes as qemu checks it (in sectors, rounded up). */
function fitsTarget(views: Image[], size: number | undefined): boolean {
  if (size === undefined) return true;
  const total = views.reduce((n, v) => n + exactSize(v), 0n);
  return total <= ((BigInt(size) + 511n) / 512n) * 512n;
}

// Synchronous up to the copy (open errors, MissingFilesError, must throw at once for the
// wrappers in registry.ts); the copy itself is a promise (its writes overlap its reads).
export const convertOp: Op = (options, ctx) => {
  const opts = options as unknown as ConvertOptions;
  if (!Array.isArray(opts.sources) || opts.sources.length === 0) throw new ImageError('no sources');
  const images = [];
  // Sources one at a time, so a failure can name the source qemu would name.
  for (let i = 0; i < opts.sources.length; i++) {
    try {
      images.push(openSource(ctx, opts.sources[i], opts));
    } catch (e) {
      if (e instanceof MissingFilesError || !(e instanceof ImageError) || opts.phase === 'copy') throw e;
      // What the driver reported before failing its open (vhdx's truncated BAT, say) comes first.
      for (const w of errorWarnings(e)) ctx.warn?.(w);
      return { failed: { source: i, message: e.message } } satisfies ConvertOpenResult;
    }
    // qemu asks each source's sector count right after opening it; only a negative count fails.
    const failed = images[i].sizeFailure;
    if (failed?.sectors) {
      const message = `Could not get size of ${opts.sources[i].fileName}: ${strerrorNumber(failed.errno)}`;
      if (opts.phase === 'copy') throw new ImageError(message);
      return { sizeFailed: message } satisfies ConvertOpenResult;
    }
  }
  let views = images;
  if (opts.snapshot !== undefined) {
    try {
      views = snapshotViews(images, opts.snapshot);
    } catch (e) {
      if (!(e instanceof ImageError) || opts.phase === 'copy') throw e;
      return { snapshotFailed: e.message } satisfies ConvertOpenResult;
    }
  }
  // A byte size past int64 (sector-count.ts): qemu creates the target with the wrapped size and
  // then fails the block status of the source's first byte, before it copies anything.
  const nothingToCopy = sectorTotalIsNegative(views);
  const sizeFailure = nothingToCopy ? undefined : views.find((v) => v.sizeFailure)?.sizeFailure;
  const blockStatus = sizeFailure ? blockStatusFailure(0, strerrorNumber(sizeFailure.errno)) : undefined;
  if (opts.phase === 'open') {
    const sizes = wireSizes(views);
    if (nothingToCopy) return { sizes, nothingToCopy } satisfies ConvertOpenResult;
    if (blockStatus) return { sizes, blockStatus, unsized: true } satisfies ConvertOpenResult;
    // --salvage: qemu's block status never fails (the copy reports each failed sector instead).
    const failed = opts.walkBlockStatus && !opts.salvage && fitsTarget(views, opts.targetSize) ? firstBlockStatusFailure(views) : undefined;
    if (failed) {
      // The driver's notice (qcow2's "Image is corrupt") comes before qemu's error.
      for (const w of errorWarnings(failed.error)) ctx.warn?.(w);
      return { sizes, blockStatus: blockStatusFailure(failed.offset, failed.reason) } satisfies ConvertOpenResult;
    }
    if (images.some((i) => i.info()['backing-filename'] !== undefined)) return { sizes, backed: true } satisfies ConvertOpenResult;
    return { sizes } satisfies ConvertOpenResult;
  }

  const output = ctx.devices.find((d) => d.spec.role === 'output');
  if (!output) throw new ImageError('no output device');
  const onProgress = opts.progress ? (done: number, total: number) => ctx.emit({ type: 'progress', done, total }) : undefined;
  const sizes = views.map((v) => v.virtualSize);
  let range = opts.range;
  let ranges: [number, number][] | undefined;
  let runs: readonly DiskRun[] | undefined;
  const worker = opts.worker ?? 0;
  if (!safeDisk(views)) {
    if (opts.phase === 'open-copy') return { sizes: wireSizes(views), tooLarge: true } satisfies ConvertOpenCopyResult;
    // The host copies only disks it has checked are below 2^53 bytes.
    throw new ImageError('the disk is too large to copy');
  }
  if (opts.phase === 'open-copy') {
    const total = sizes.reduce((a, b) => a + b, 0);
    if (worker === 0) {
      // qemu creates the target with the disk's size before it copies anything.
      try {
        (output.dev as { truncate?: (size: number) => void }).truncate?.(total);
      } catch (e) {
        // A size the file system refuses (EFBIG): qemu's "Could not resize file".
        const code = (e as NodeJS.ErrnoException).code;
        if (typeof code !== 'string') throw e;
        return { createFailed: code } satisfies ConvertOpenCopyResult;
      }
      allocateFirstBlock(total, (buf, at) => output.dev.write?.(buf, at));
    }
  }
  if (blockStatus) throw new ImageError(blockStatus);
  if (nothingToCopy) return Promise.resolve(opts.phase === 'open-copy' ? ({ sizes, counted: 0 } satisfies ConvertOpenCopyResult) : { counted: 0 });
  const disk = sizes.reduce((a, b) => a + b, 0);
  if (opts.phase === 'open-copy') {
    if (!opts.progress && opts.share === 'striped') ranges = stripedRanges(disk, worker, opts.workers ?? 1);
    else ({ range, runs } = (opts.progress ? progressShare : balancedShare)(views, worker, opts.workers ?? 1));
  }
  // Parts of one disk: the host replays every guest's chunks in disk order through one rule.
  const everyChunk = range !== undefined && range[1] - range[0] < disk;
  return copyToRaw({
    images: views,
    output: output.dev,
    sparseSize: opts.sparseSize ?? 4096,
    targetIsZero: !!opts.targetIsZero,
    range,
    ranges,
    runs,
    onProgress,
    everyChunk,
    coroutines: Number.isSafeInteger(opts.coroutines) ? opts.coroutines : undefined,
    salvage: opts.salvage ? salvageMessages(ctx) : undefined,
    offload: opts.copyRange === true && offloadsFrom(views),
  }).then((counted) => (opts.phase === 'open-copy' ? ({ sizes, counted } satisfies ConvertOpenCopyResult) : { counted }));
};
