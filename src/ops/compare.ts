// `compare`, the guest half: opens both images (each with its backing chain) and walks them as
// qemu-img compare does: block status of both, regions both report as zero skipped unread, others
// read in chunks of at most qemu's IO_BUF_SIZE and compared with Buffer.equals; only a differing
// chunk is searched, sector by sector, for the offset qemu reports. What compare prints travels in
// order: with -p, progress lines and the size warning as live progress messages; the rest (and
// everything without -p) in the result, which the host prints after them.
import { ImageError, type Extent, type Image } from '../formats/types.ts';
import { MissingFilesError, openTree } from './open-tree.ts';
import type { NeededFile } from '../protocol/messages.ts';
import type { Op, OpContext } from './types.ts';
import type { OpenTreeOptions } from './open-tree.ts';
import { CompareProgress, FLOAT_BITS, floatToBits } from './compare-progress.ts';
import { skippableRunEnd, statusView, type StatusView } from './compare-status.ts';
import { errorWarnings } from '../guest/describe-error.ts';
import { strerror } from '../strerror.ts';

export interface CompareOptions {
  /** -f and -F (or the drivers named by --image-opts); detection when absent. */
  formats: [string | undefined, string | undefined];
  /** The names as the user gave them, for the dmg probe and driver messages. */
  fileNames: [string, string];
  strict?: boolean;
  progress?: boolean;
  unsafeQuirks?: boolean;
  profile?: OpenTreeOptions['profile'];
  /** Open the first image only and report whether that works (the host's error ordering). */
  openFirstOnly?: boolean;
  /** Keys of encrypted images, base64 by device index (host-read --object secrets). */
  secrets?: Record<number, string>;
  /** Key options given without driver= (open-tree.ts). */
  keyOptions?: Record<number, string>;
}

/** One piece of stdout, in order: a progress percentage (a C float) or a line of text. */
export type CompareEvent = { progress: number } | { text: string };

/**
 * Why the walk stopped early: image `image` failed its block status (qemu: "Sector allocation test
 * failed", exit 3) or a read of the chunk at `offset` (qemu: "Error while reading offset", exit 4);
 * or, before the walk, its size query (qemu: "Can't get size of", exit 4), with a C int errno.
 */
export type CompareFailure =
  | { image: 0 | 1; status: 3 }
  | { image: 0 | 1; status: 4; offset: number; reason: string }
  | { image: 0 | 1; status: 4; sizeErrno: number };

export type CompareResult =
  | { opened: false; image: 0 | 1; message: string }
  | { opened: true; formats: string[]; status: 0 | 1; events: CompareEvent[] }
  | { opened: true; formats: string[]; status: 3 | 4; events: CompareEvent[]; failure: CompareFailure };

/** A failed block status or read inside the walk, with the qemu error it becomes. */
class WalkFailure extends Error {
  constructor(readonly failure: CompareFailure, readonly source: unknown) {
    super('compare walk failed');
  }
}

/** Runs `fn`; an image's own error becomes a WalkFailure (anything else is a bug and stays one). */
function guarded<T>(fn: () => T, fail: (reason: string) => CompareFailure): T {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof ImageError) || e instanceof MissingFilesError) throw e;
    throw new WalkFailure(fail(e.errno ? strerror(e.errno) : e.message), e);
  }
}

/** qemu-img's IO_BUF_SIZE: the most compare reads from each image at once. */
const IO_BUF_SIZE = 2 * 1024 * 1024;
const SECTOR = 512;
const SIZE_WARNING = 'Warning: Image size mismatch!\n';
/** What is read at once: 1 MiB pieces copy fastest here (FACTS.md: bigger ones thrash L2). */
const READ_SIZE = 1024 * 1024;

// Block status bits as qemu's bdrv_block_status_above returns them; strict mode compares them.
const DATA = 0x01;
const ZERO = 0x02;
const OFFSET_VALID = 0x04;
const ALLOCATED = 0x10;
const EOF = 0x20;
/** Reported since qemu 8.2 (profile.mapCompressed). */
const COMPRESSED = 0x80;

/** Extents whose status has qemu's ZERO bit (statusOf): compare skips them when both images agree. */
const readsAsZero = (e: Extent) => e.kind !== 'data' || !!e.zeroData;

/** The status qemu would give this extent (the chain's bottom holes read as zeros). */
function statusOf(e: Extent, size: number, compressedBit: boolean): number {
  let s = e.kind === 'data' ? DATA | ALLOCATED : e.kind === 'zero' ? ZERO | ALLOCATED : ZERO;
  // Data in a hole of its file reads as zeros: qemu's DATA|ZERO.
  if (e.kind === 'data' && e.zeroData) s |= ZERO;
  if (e.kind !== 'unallocated' && e.hostOffset !== undefined && !e.compressed) s |= OFFSET_VALID;
  if (e.offset + e.length >= size) s |= EOF;
  if (compressedBit && e.compressed) s |= COMPRESSED;
  return s;
}

function extentAt(view: StatusView, image: 0 | 1, offset: number, end: number): Extent {
  const e = guarded(() => view(offset, end), () => ({ image, status: 3 }));
  // A driver's extent must move forward; a zero-length one would loop forever.
  if (!(e.length > 0)) throw new ImageError(`block status at offset ${offset} made no progress`);
  return { ...e, offset, length: Math.min(e.length, end - offset) };
}

/**
 * Whether qemu's first block-status request for this image (the whole disk, in sectors) turns
 * negative in the driver's C int (Image.blockStatusIntSectors): a disk of 2^31 to 2^32 - 1
 * sectors, modulo 2^32. The negative count comes back as a negative length, and compare's read of
 * that length fails with EIO. (A count that truncates to a positive one ends, step by step, at a
 * zero one, where qemu aborts on an assertion: nothing to match there.)
 */
function truncatesNegative(image: Image, size: number): boolean {
  return !!image.blockStatusIntSectors && BigInt.asIntN(32, BigInt(Math.floor(size / SECTOR))) < 0n;
}

/**
 * compare's first step on such a disk: qemu reads the chunk of negative length from image 1 when
 * both are allocated, else from the allocated one ("Error while reading offset 0", status 4). Two
 * unallocated images step backwards instead, and qemu aborts: the walk goes on.
 */
function negativeFirstStep(statusA: number, statusB: number): CompareFailure | undefined {
  if (statusA & ZERO && statusB & ZERO) return undefined;
  const allocatedA = (statusA & ALLOCATED) !== 0;
  if (!allocatedA && (statusB & ALLOCATED) === 0) return undefined;
  return { image: allocatedA ? 0 : 1, status: 4, offset: 0, reason: strerror('EIO') };
}

/** Offset (from the chunk's start) of the first 512-byte sector that differs, as qemu counts. */
function firstDifferentSector(a: Buffer, b: Buffer): number {
  for (let at = 0; at < a.length; at += SECTOR) {
    const end = Math.min(at + SECTOR, a.length);
    if (!a.subarray(at, end).equals(b.subarray(at, end))) return at;
  }
  return -1;
}

/** An image with its place on the command line (qemu's messages name it by that). */
interface Sided {
  image: Image;
  index: 0 | 1;
}

/**
 * Reads `length` bytes at `offset` from both images (b absent: compares against zeros) in pieces
 * of READ_SIZE, and returns the absolute offset qemu reports for the first difference, or -1.
 * Pieces start at sector multiples from `offset`, so the sector search inside one is qemu's.
 */
function firstDifference(a: Sided, b: Sided | undefined, offset: number, length: number, bufA: Buffer, bufB: Buffer): number {
  // qemu reads the whole chunk at once: a failure is reported at the chunk's offset.
  const read = (s: Sided, buf: Buffer, at: number) =>
    guarded(() => s.image.read(buf, at), (reason) => ({ image: s.index, status: 4, offset, reason }));
  for (let done = 0; done < length; done += READ_SIZE) {
    const n = Math.min(READ_SIZE, length - done);
    const pa = bufA.subarray(0, n);
    const pb = bufB.subarray(0, n);
    read(a, pa, offset + done);
    if (b) read(b, pb, offset + done);
    if (!pa.equals(pb)) return offset + done + firstDifferentSector(pa, pb);
  }
  return -1;
}

function openOne(ctx: OpContext, index: 0 | 1, opts: CompareOptions, missing: NeededFile[]): Image | { failed: string } | undefined {
  try {
    return openTree(ctx, index, { format: opts.formats[index], fileName: opts.fileNames[index], profile: opts.profile, unsafeQuirks: opts.unsafeQuirks, secrets: opts.secrets ?? {}, keyOptions: opts.keyOptions });
  } catch (e) {
    if (e instanceof MissingFilesError) {
      missing.push(...e.files);
      return undefined;
    }
    if (e instanceof ImageError) {
      // The lines qemu printed before its open error (error_report) still come first.
      for (const w of errorWarnings(e)) ctx.warn?.(w);
      return { failed: e.message };
    }
    throw e;
  }
}

export const compareOp: Op = (options, ctx) => {
  const opts = options as unknown as CompareOptions;
  const missing: NeededFile[] = [];
  const images: Image[] = [];
  for (const index of opts.openFirstOnly ? [0 as const] : [0 as const, 1 as const]) {
    const opened = openOne(ctx, index, opts, missing);
    if (opened !== undefined && 'failed' in opened) {
      // qemu opens the first image completely before the second: its missing files come first.
      if (missing.length > 0) break;
      return { opened: false, image: index, message: opened.failed } satisfies CompareResult;
    }
    if (opened) images.push(opened);
  }
  if (missing.length > 0) throw new MissingFilesError(missing);
  if (opts.openFirstOnly) return { opened: true, formats: [images[0].format], status: 0, events: [] } satisfies CompareResult;
  const events: CompareEvent[] = [];
  const views = images.map((image) => statusView(image));
  const compressedBit = !!(opts.profile as { mapCompressed?: boolean } | undefined)?.mapCompressed;
  // With -p, progress and the size warning go to the host as they happen (live), in order;
  // the verdict comes with the result.
  const out = (ev: CompareEvent) => {
    if (opts.progress && 'progress' in ev) ctx.emit({ type: 'progress', done: floatToBits(ev.progress), total: FLOAT_BITS });
    else if (opts.progress && 'text' in ev && ev.text === SIZE_WARNING) ctx.emit({ type: 'progress', done: 0, total: 0 });
    else events.push(ev);
  };
  const progress = opts.progress ? new CompareProgress((value) => out({ progress: value })) : undefined;
  const formats = images.map((i) => i.format);
  // qemu asks both sizes, in order, before it prints or reads anything.
  for (const index of [0, 1] as const) {
    const failed = images[index].sizeFailure;
    if (failed) return { opened: true, formats, status: 4, events, failure: { image: index, status: 4, sizeErrno: failed.errno } } satisfies CompareResult;
  }
  // Errors a long stride met ahead of the walk: the walk meets them again at their step.
  const aheadErrors: unknown[] = [];
  try {
    const status = compareImages(images[0], images[1], views, compressedBit, !!opts.strict, progress, out, (e) => aheadErrors.push(e));
    return { opened: true, formats, status, events } satisfies CompareResult;
  } catch (e) {
    if (!(e instanceof WalkFailure)) throw e;
    // What the driver printed on the way (qcow2's corruption notice) comes before qemu's error.
    for (const source of [...aheadErrors, e.source]) for (const w of errorWarnings(source)) ctx.warn?.(w);
    return { opened: true, formats, status: e.failure.status, events, failure: e.failure } satisfies CompareResult;
  }
};

/** qemu's walk; returns the exit status (0 identical, 1 different) and gives `out` what it prints. */
function compareImages(a: Image, b: Image, [viewA, viewB]: StatusView[], compressedBit: boolean, strict: boolean, progress: CompareProgress | undefined, out: (ev: CompareEvent) => void, aheadError: (e: unknown) => void): 0 | 1 {
  const sizeA = a.virtualSize;
  const sizeB = b.virtualSize;
  const common = Math.min(sizeA, sizeB);
  const base = Math.max(sizeA, sizeB);
  const say = (text: string) => out({ text });
  progress?.start();
  if (strict && sizeA !== sizeB) {
    say('Strict mode: Image size mismatch!\n');
    return 1;
  }
  // Without -p and -s, qemu's steps through zero regions leave no trace: skip them in long strides
  // (a 2 TiB sparse vmdk is 32 Mi grain steps for qemu).
  const stride = !strict && !progress;
  const bufA = Buffer.alloc(Math.min(READ_SIZE, Math.max(common, base - common, 1)));
  const bufB = Buffer.alloc(bufA.length);
  let offset = 0;
  while (offset < common) {
    const extA = extentAt(viewA, 0, offset, sizeA);
    const extB = extentAt(viewB, 1, offset, sizeB);
    const statusA = statusOf(extA, sizeA, compressedBit);
    const statusB = statusOf(extB, sizeB, compressedBit);
    let chunk = Math.min(extA.length, extB.length, common - offset);
    if (strict && statusA !== statusB) {
      say(`Strict mode: Offset ${offset} block status mismatch!\n`);
      return 1;
    }
    const negative = offset === 0 && (truncatesNegative(a, sizeA) || truncatesNegative(b, sizeB)) ? negativeFirstStep(statusA, statusB) : undefined;
    if (negative) throw new WalkFailure(negative, undefined);
    if (statusA & ZERO && statusB & ZERO) {
      if (stride) chunk = Math.max(chunk, Math.min(skippableRunEnd(a, offset, common, readsAsZero, aheadError), skippableRunEnd(b, offset, common, readsAsZero, aheadError)) - offset);
    } else {
      chunk = Math.min(chunk, IO_BUF_SIZE);
      const at = firstDifference({ image: a, index: 0 }, { image: b, index: 1 }, offset, chunk, bufA, bufB);
      if (at >= 0) {
        say(`Content mismatch at offset ${at}!\n`);
        return 1;
      }
    }
    offset += chunk;
    progress?.advance(chunk, base);
  }
  if (sizeA !== sizeB) {
    say(SIZE_WARNING);
    const overIndex = sizeA > sizeB ? 0 : 1;
    const over = { image: overIndex === 0 ? a : b, index: overIndex } as const;
    const overView = sizeA > sizeB ? viewA : viewB;
    const zeros = Buffer.alloc(bufA.length);
    while (offset < base) {
      const ext = extentAt(overView, overIndex, offset, base);
      // A 0-byte image leaves the first step to the tail: the same negative length as above.
      if (offset === 0 && ext.kind === 'data' && truncatesNegative(over.image, base)) {
        throw new WalkFailure({ image: overIndex, status: 4, offset: 0, reason: strerror('EIO') }, undefined);
      }
      let chunk = ext.length;
      if (ext.kind !== 'data' && stride) chunk = Math.max(chunk, skippableRunEnd(over.image, offset, base, (e) => e.kind !== 'data', aheadError) - offset);
      if (ext.kind === 'data') {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        const at = firstDifference(over, undefined, offset, chunk, bufA, zeros);
        if (at >= 0) {
          say(`Content mismatch at offset ${at}!\n`);
          return 1;
        }
      }
      offset += chunk;
      progress?.advance(chunk, base);
    }
  }
  say('Images are identical.\n');
  return 0;
}
