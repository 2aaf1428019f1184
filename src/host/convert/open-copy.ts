// convert in one round of guests: when the target does not exist yet, the host creates it empty
// (O_EXCL, so it is surely ours) and starts every copy guest at once; each opens the sources, and
// either answers qemu's open failure (the host then removes the target: qemu never created it)
// or copies its part (ops/convert/split.ts). One guest launch fewer than an open guest followed
// by copy guests, and the copy starts a launch earlier. Where qemu's order of checks needs the
// sizes before the target exists (-n, an existing target, a bad -t or -O), the caller keeps the
// two rounds.
import { fstatSync, ftruncateSync, writeSync } from 'node:fs';
import type { CommandContext } from '../commands/types.ts';
import { OpError } from '../sandbox/run.ts';
import { nestedReason, runWithReferencedFiles, ReferencedFileError, type InputFile } from '../open-files.ts';
import type { Target } from '../input-image.ts';
import { strerror } from '../../strerror.ts';
import type { ProgressPrinter } from '../../output/progress.ts';
import type { ConvertOptions } from '../../ops/convert.ts';
import { ConvertError } from './errors.ts';
import { copyGuestCount } from './fresh-target.ts';
import { isPowerOfTwo } from '../../ops/convert/sparse-runs.ts';
import { allocateFirstBlock } from '../../formats/raw/first-block.ts';
import { INT64_DECIMAL } from '../../protocol/messages.ts';

/** A failure after which the target stays, as qemu leaves it (created, but not sizeable). */
export class TargetLeft extends ConvertError {}

/** qemu's words when the new target cannot take the disk's size (raw_co_create's ftruncate). */
export function resizeFailed(path: string, code: string, format = 'raw'): string {
  return `${path}: error while converting ${format}: Could not resize file: ${strerror(code)}`;
}

/** Whether a guest's failure is qemu's failed block status (ops/convert.ts blockStatusFailure). */
export const isBlockStatusFailure = (e: unknown): e is OpError => e instanceof OpError && e.message.startsWith('error while reading block status at offset ');

/**
 * The target as qemu leaves it after a failed block status: qemu checks the whole disk's block
 * status before it writes anything, so its new target is as created, `size` bytes of zeros with
 * only the first block allocated, whatever the copy here had written meanwhile.
 */
export function resetTarget(outFd: number, size: number): void {
  ftruncateSync(outFd, 0);
  ftruncateSync(outFd, size);
  allocateFirstBlock(size, (buf, at) => void writeSync(outFd, buf, 0, buf.length, at));
}

/** Something only qemu's order in two rounds words right: the caller removes the target and takes them. */
export class TwoRoundsNeeded extends Error {}

/** The image names the new target itself (as a backing file, say). */
export class TargetReferenced extends TwoRoundsNeeded {}

/**
 * Progress of several guests as one line, as qemu's one pass prints it: the guests' parts are
 * replayed in disk order (guest 0's reports, then guest 1's from where guest 0's part ended, …)
 * through the printer's one rule. Each guest reports (0, its total) once it has walked its part's
 * block status (copy.ts); lines wait until every guest has, as qemu walks the whole disk before its
 * first line (a walk that fails in a later part leaves only the opening 0.00 line, as qemu's
 * does). A guest copying a part of a split disk reports every chunk (copy.ts everyChunk), so the
 * replay meets every point where qemu's rule could print; a guest alone reports only its lines.
 * Reports of a later part wait until the earlier parts are done.
 */
export function progressSum(guests: number, printer: ProgressPrinter | undefined): ((done: number, total: number) => void)[] {
  const counted = new Array<number>(guests).fill(0);
  const walked = new Array<boolean>(guests).fill(false);
  const done = new Array<number>(guests).fill(0);
  const queued: number[][] = Array.from({ length: guests }, () => []);
  // The part being replayed, and the counted bytes of the parts before it.
  let current = 0;
  let before = 0;
  const sum = () => counted.reduce((a, b) => a + b, 0);
  const flush = () => {
    if (!walked.every(Boolean)) return;
    while (current < guests) {
      for (const d of queued[current].splice(0)) {
        done[current] = d;
        // The opening line is the host's own (ProgressPrinter): nothing before the first copied byte.
        if (before + d > 0) printer?.show((100 * (before + d)) / sum());
      }
      if (done[current] < counted[current]) return;
      before += counted[current];
      current++;
    }
  };
  return counted.map((_, i) => (d: number, t: number) => {
    // A guest's first report is its walk's end: a total, nothing copied, no line of its own.
    if (!walked[i]) {
      walked[i] = true;
      counted[i] = t;
    } else {
      queued[i].push(d);
    }
    flush();
  });
}

/** qemu's message for an open phase answer that names a failed source or snapshot, or a size it cannot tell. */
export function checkOpenAnswer(r: Record<string, unknown> | undefined, targets: Target[]): void {
  if (typeof r?.snapshotFailed === 'string') throw new ConvertError(r.snapshotFailed);
  if (typeof r?.sizeFailed === 'string') throw new ConvertError(r.sizeFailed);
  const failed = r?.failed as { source?: unknown; message?: unknown } | undefined;
  if (failed && Number.isInteger(failed.source) && typeof failed.message === 'string' && targets[failed.source as number]) {
    throw new ConvertError(`Could not open '${targets[failed.source as number].errorName}': ${failed.message}`);
  }
}

/** A referenced file's open failure, worded as qemu words it for the source that named it. */
export function referencedFailure(e: ReferencedFileError, targets: Target[]): ConvertError {
  return new ConvertError(`Could not open '${targets[e.root]?.errorName ?? e.path}': ${nestedReason(e)}`);
}

/**
 * The sources' virtual sizes from a guest's answer (ops/convert.ts WireSize: a safe integer, or a
 * larger one in exact decimal), or undefined when malformed: `count` non-negative int64 values.
 */
export function parseSizes(sizes: unknown, count: number): bigint[] | undefined {
  if (!Array.isArray(sizes) || sizes.length !== count) return undefined;
  const out: bigint[] = [];
  for (const s of sizes) {
    if (typeof s === 'number' && Number.isSafeInteger(s) && s >= 0) out.push(BigInt(s));
    else if (typeof s === 'string' && INT64_DECIMAL.test(s) && !s.startsWith('-')) out.push(BigInt(s));
    else return undefined;
  }
  return out;
}

/** The sizes as numbers, when each and their sum are exact (what the copy can work with). */
export function safeSizes(sizes: bigint[]): number[] | undefined {
  const sum = sizes.reduce((a, b) => a + b, 0n);
  return sum <= BigInt(Number.MAX_SAFE_INTEGER) ? sizes.map(Number) : undefined;
}

/** The disk offset a guest's failure names ("… at byte N" / "… at offset N"), if it names one. */
function failureOffset(o: PromiseSettledResult<unknown>): number | undefined {
  if (o.status !== 'rejected' || !(o.reason instanceof OpError)) return undefined;
  const m = /^error while reading (?:block status )?at (?:byte|offset) (\d+):/.exec(o.reason.message);
  return m ? Number(m[1]) : undefined;
}

/**
 * The outcomes, the copy failures that name an offset put in the order of their offsets (in the
 * places such failures held); the rest stay as they were, in guest order. Each guest copies its
 * stripes in disk order and stops at its first failure, so the lowest offset any guest names is
 * the first failure on the disk, the one qemu's pass in disk order meets. (A block status failure
 * names its offset in its source: with several sources, two guests' failures in different
 * sources compare as those offsets.)
 */
export function inDiskOrder<T extends PromiseSettledResult<unknown>>(outcomes: T[]): T[] {
  const offsets = outcomes.map(failureOffset);
  const slots = offsets.flatMap((at, i) => (at === undefined ? [] : [i]));
  const sorted = [...slots].sort((a, b) => offsets[a]! - offsets[b]! || a - b);
  const out = [...outcomes];
  slots.forEach((slot, k) => (out[slot] = outcomes[sorted[k]]));
  return out;
}

/** Whether -S (0: off; undefined: 4k) is one whose zero detection is blocks aligned to the disk, which any split keeps. */
export const splittableSparse = (sparse: number | undefined): boolean => sparse === undefined || sparse === 0 || isPowerOfTwo(sparse);

/**
 * Opens and copies into `outFd` (created empty by createFreshTarget, fresh-target.ts) with one
 * guest per core.
 * Every guest's outcome is awaited; the first failure in guest order is the one reported.
 */
export async function openAndCopy(inputs: InputFile[], targets: Target[], outFd: number, outPath: string, options: ConvertOptions, printer: ProgressPrinter | undefined, ctx: CommandContext): Promise<void> {
  // --salvage: one guest, so that its warnings come in disk order, as qemu's one pass prints them.
  // -S of no power of two: one guest, whose chunks are qemu's (a part's start could cut one).
  const workers = options.salvage || !splittableSparse(options.sparseSize) ? 1 : copyGuestCount(inputs.map((input, i) => ({ fd: input.fd, format: targets[i]?.format })));
  const progress = progressSum(workers, printer);
  const withOutput: InputFile[] = [...inputs, { fd: outFd, path: outPath, writable: true, role: 'output' }];
  const target = fstatSync(outFd);
  const hooks = {
    onOpened: (_file: unknown, fd: number) => {
      const st = fstatSync(fd);
      if (st.dev === target.dev && st.ino === target.ino) throw new TargetReferenced('the image names the target');
    },
  };
  // INSTAR_COPY_SHARE=striped: the guests copy stripes instead of weighed parts (split.ts), a
  // variant kept for measuring: it saves the weighing walk, yet measured slower at load ~2 (2 GiB
  // corpus, 10 alternating runs: raw 448 vs 397 ms, qcow2 519 vs 452 ms medians).
  const share = process.env.INSTAR_COPY_SHARE === 'striped' ? 'striped' : undefined;
  const settled = await Promise.allSettled(progress.map((onProgress, worker) => {
    const run = { ...ctx.run, onProgress };
    return runWithReferencedFiles('convert', { ...options, phase: 'open-copy', worker, workers, share }, withOutput, { ...ctx, run }, [], hooks);
  }));
  const outcomes = inDiskOrder(settled);
  if (outcomes.some((o) => o.status === 'rejected' && o.reason instanceof TargetReferenced)) throw new TargetReferenced('the image names the target');
  let sizes: bigint[] | undefined;
  for (const o of outcomes) {
    if (o.status === 'rejected') {
      // qemu's pass over the disk's block status precedes every read and write: the first guest
      // (lowest range) that failed it has qemu's message, whatever the others met. Guest 0 sized
      // the target before its copy (it answered no open failure: none of them did, then).
      const blockStatus = outcomes.find((b) => b.status === 'rejected' && isBlockStatusFailure(b.reason)) as PromiseRejectedResult | undefined;
      if (blockStatus) {
        resetTarget(outFd, fstatSync(outFd).size);
        throw new TargetLeft((blockStatus.reason as OpError).message);
      }
      if (o.reason instanceof ReferencedFileError) throw referencedFailure(o.reason, targets);
      if (o.reason instanceof OpError) throw new ConvertError(o.reason.message);
      throw o.reason;
    }
    const r = o.value as Record<string, unknown> | undefined;
    checkOpenAnswer(r, targets);
    if (typeof r?.createFailed === 'string' && /^E[A-Z0-9]{1,15}$/.test(r.createFailed)) {
      // As qemu leaves it: created, empty (another guest may have written its part meanwhile).
      ftruncateSync(outFd, 0);
      throw new TargetLeft(resizeFailed(outPath, r.createFailed));
    }
    const answered = parseSizes(r?.sizes, targets.length);
    if (!answered || (sizes && sizes.some((s, i) => s !== answered[i]))) throw new ConvertError('the guest gave a malformed answer');
    sizes = answered;
    // A disk past 2^53 bytes: the guests did nothing; qemu's wording for it needs the two rounds.
    if (r?.tooLarge === true || !safeSizes(sizes)) throw new TwoRoundsNeeded('the disk passes 2^53 bytes');
  }
  // Guest 0 sized the target before copying, as qemu creates it; the host makes sure of it.
  const total = safeSizes(sizes!)!.reduce((a, b) => a + b, 0);
  if (fstatSync(outFd).size !== total) ftruncateSync(outFd, total);
}
