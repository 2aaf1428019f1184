// The guest half of `convert -n -O qcow2`: the disk copied into an EXISTING qcow2 image. qemu-img
// convert takes the sources as it does for a new image (the same requests: copy.ts runs, 2 MiB
// chunks, -S zero detection, whole target clusters), but the target does not read as zeros: each
// stretch the copy skips is written as zeros (write-zeroes with MAY_UNMAP: its clusters freed,
// its entries made zero clusters), unless --target-is-zero says the target reads as zeros
// already. The requests are recorded, then planned by inplace-write.ts (qemu's allocator on the
// image as it is) and applied by the repair executor; the data is read from the sources again
// when each fill step runs.
import { ImageError, type BlockDevice, type Image, type ImageWriter, type OpenContext } from '../../formats/types.ts';
import { readAt, roundUp as roundUpTo } from '../../formats/bytes.ts';
import { applyRepair } from '../../formats/repair.ts';
import { parseHeader, type Qcow2Header } from '../../formats/qcow2/header.ts';
import { MissingFilesError, openTree } from '../open-tree.ts';
import { planInPlaceWrite, type ClusterRun } from '../../formats/qcow2/inplace-write.ts';
import { inPlaceWithBitmaps, type SessionOptions } from '../../formats/qcow2/inplace-bitmaps.ts';
import { openWritesBitmaps } from '../../formats/qcow2/bitmap-session.ts';
import { PlanRefusal } from '../../formats/qcow2/refcount-update.ts';
import { openSource, snapshotViews, type ConvertSource, type SnapshotChoice } from './sources.ts';
import { copyToImage } from './to-image-copy.ts';
import { KeptBytes } from './into-kept-bytes.ts';
import { addedBitmaps, type AddedBitmaps } from './into-bitmaps.ts';
import { sourceBitmaps } from './to-image-bitmaps.ts';
import type { LiveBitmap } from '../../formats/qcow2/bitmap-state.ts';
import { salvageMessages, salvageRead } from './salvage.ts';
import { copyInPlace, luksTarget, roundUp } from './in-place-copy.ts';
import { RequestFailed } from './to-image-copy.ts';
import { plainInPlaceWriter } from '../in-place-writers.ts';
import { parallelsIntoTarget } from './into-parallels.ts';
import { vmdkInPlaceWriter } from '../../formats/vmdk/inplace.ts';
import type { VmdkImage } from '../../formats/vmdk/image.ts';
import type { VhdxGuidSource } from '../../formats/vhdx/inplace.ts';
import { luks2InPlaceTarget } from '../../formats/luks/luks2-inplace.ts';

/** The --target-image-opts options each probed format takes (its key). */
const FORMAT_OPTIONS: Record<string, string[]> = { luks: ['key-secret'], qcow2: ['encrypt.key-secret'], qcow: ['encrypt.key-secret'] };

/** The formats other than qcow2 that instar writes into as qemu does (in-place-copy.ts). */
const IN_PLACE = new Set(['luks', 'vdi', 'vpc', 'qed', 'parallels', 'qcow', 'vmdk', 'vhdx']);
import type { Op } from '../types.ts';

export interface ConvertIntoOptions {
  sources: ConvertSource[];
  /** Device index of the target, granted writable. */
  target: number;
  /** The target's name as the user gave it (messages). */
  targetName?: string;
  /** The target's format (-O, or driver= of --target-image-opts); absent: probed, as qemu does. */
  format?: string;
  /** -c: qemu refuses it once the target is open when its driver cannot compress. */
  compressed?: boolean;
  /** --target-image-opts without driver=: the options the probed format must have (into-target.ts). */
  probedOptions?: string[];
  /** ... and the key-secret id no --object has (qemu's words when the target probes as luks). */
  missingSecret?: string;
  /** qemu 8.2+: the parallels driver discards whole clusters for write-zeroes (formats/parallels/inplace.ts). */
  parallelsDiscards?: boolean;
  /** The emulated qemu's version: what its parallels open repairs or refuses (into-parallels.ts). */
  qemu?: { major: number; minor: number };
  snapshot?: SnapshotChoice;
  unsafeQuirks?: boolean;
  profile?: OpenContext['profile'];
  secrets?: Record<number, string>;
  sparseSize?: number;
  targetIsZero?: boolean;
  /** --salvage: unreadable sectors copied as zeros, failed block status taken as data (salvage.ts). */
  salvage?: boolean;
  /**
   * -B: qemu then skips what a source leaves to its backing chain; with sources without one it
   * changes nothing (measured), which is all instar does yet.
   */
  backingGiven?: boolean;
  progress?: boolean;
  /** --bitmaps: the first source's bitmaps are added to the (qcow2) target after the copy (into-bitmaps.ts). */
  bitmaps?: boolean;
  /** Tests only: the CID a vmdk target gets instead of a random one (formats/vmdk/inplace.ts). */
  vmdkCid?: number;
  /** Tests only (in-process): the GUIDs a vhdx target gets instead of random ones (formats/vhdx/inplace.ts). */
  vhdxGuids?: VhdxGuidSource;
}

const OFFSET_MASK = 0x00fffffffffffe00n;
const COMPRESSED = 2n ** 62n;
const ZERO_FLAG = 1n;

export type ConvertIntoResult =
  | { counted: number; bitmapWarnings?: string[]; bitmapFailed?: string }
  | { refused: string } | { tooSmall: true } | { openFailed: string } | { cannotCompress: true } | { bitmapsUnsupported: true }
  /** The target's driver failed a request (to-image-copy.ts RequestFailed): qemu's line, after the writes before it. */
  | { writeFailed: string };

/** Records qemu-img's data requests instead of writing them. */
class RequestRecorder implements ImageWriter {
  /** qemu's requests in order: writes, and (zero) its write-zeroes requests. */
  readonly requests: Request[] = [];
  constructor(readonly clusterSize: number) {}
  write(data: Uint8Array, offset: number): void {
    this.requests.push({ offset, length: data.length });
  }
  zeroes(offset: number, length: number): void {
    this.requests.push({ offset, length, zero: true });
  }
  finish(): void {}
}

interface Request {
  offset: number;
  length: number;
  zero?: boolean;
}

/** The concatenated sources' guest bytes at virtual `offset` (`salvage`: unreadable sectors as zeros, reported already). */
function readDisk(images: Image[], buf: Uint8Array, offset: number, salvage: boolean): void {
  let base = 0;
  for (const image of images) {
    const start = Math.max(offset, base);
    const end = Math.min(offset + buf.length, base + image.virtualSize);
    const part = buf.subarray(start - offset, end - offset);
    if (start < end && salvage) salvageRead(image, part, start - base, () => undefined);
    else if (start < end) image.read(part, start - base);
    base += image.virtualSize;
  }
  if (base < offset + buf.length) buf.fill(0, Math.max(0, base - offset));
}

/** Whether guest cluster `cluster` of the target reads as zeros by block status (unallocated, or a zero cluster). */
function readsZero(dev: BlockDevice, h: Qcow2Header, cluster: number, hasBacking: boolean): boolean {
  // Over a backing file an unallocated cluster reads what the backing chain's block status says.
  const unallocated = () => {
    if (hasBacking) throw new PlanRefusal('instar cannot convert into this qcow2 image (the copy covers in part a cluster its backing file decides); nothing was written');
    return true;
  };
  const perL2 = h.clusterSize / 8;
  const l1Index = Math.floor(cluster / perL2);
  if (l1Index >= h.l1Size) return unallocated();
  const l2 = readAt(dev, Number(h.l1TableOffset) + l1Index * 8, 8).readBigUInt64BE(0) & OFFSET_MASK;
  if (l2 === 0n) return unallocated();
  const entry = readAt(dev, Number(l2) + (cluster % perL2) * 8, 8).readBigUInt64BE(0);
  if (entry === 0n) return unallocated();
  return (entry & (COMPRESSED | ZERO_FLAG)) === ZERO_FLAG;
}

/**
 * qemu's requests as whole-cluster runs for the planner, in order. A data request covers its
 * clusters (qcow2 fills the rest of a fresh one, and the fill reads the source's bytes there,
 * which are the disk's final bytes). A write-zeroes request (none with --target-is-zero), or a
 * stretch no request covers, zeroes its whole clusters; a cluster it covers in part is made a
 * zero cluster when it reads as zeros by block status at that point (qemu looks at the rest of
 * the cluster), else qemu writes the zeros into it (a data run, which a later request in the
 * same cluster then finds allocated: qemu's zero requests are cut where its block-status runs
 * and chunks end, which need not be cluster boundaries).
 */
function clusterRuns(requests: readonly Request[], disk: number, targetSize: number, targetIsZero: boolean, cs: number, isZero: (cluster: number) => boolean): ClusterRun[] {
  const runs: ClusterRun[] = [];
  /** What a cluster reads as by block status once earlier requests were applied. */
  const state = new Map<number, boolean>();
  const push = (first: number, last: number, zero: boolean) => {
    if (last < first) return;
    runs.push({ offset: first * cs, length: (last - first + 1) * cs, zero });
    for (let c = first; c <= last; c++) state.set(c, zero);
  };
  const partial = (c: number) => push(c, c, state.get(c) ?? isZero(c));
  const zeros = (from: number, to: number) => {
    if (targetIsZero || to <= from) return;
    let first = Math.floor(from / cs);
    let last = Math.floor((to - 1) / cs);
    const headPart = from % cs !== 0;
    // Past the disk's end a cluster still holds the target's own bytes, up to the target's end.
    const tailPart = to % cs !== 0 && to !== targetSize;
    if (first === last && (headPart || tailPart)) return partial(first);
    if (headPart) partial(first++);
    if (tailPart) last--;
    push(first, last, true);
    if (tailPart) partial(last + 1);
  };
  let next = 0;
  for (const r of requests) {
    if (r.offset > next) zeros(next, r.offset);
    next = Math.max(next, r.offset + r.length);
    if (r.zero) {
      zeros(r.offset, r.offset + r.length);
      continue;
    }
    // --target-is-zero: the rest of a cluster the request covers in part keeps the target's bytes (into-kept-bytes.ts).
    push(Math.floor(r.offset / cs), Math.floor((r.offset + r.length - 1) / cs), false);
  }
  zeros(next, disk);
  return runs;
}

export const convertIntoOp: Op = (raw, ctx) => {
  const opts = raw as unknown as ConvertIntoOptions;
  if (!Array.isArray(opts.sources) || opts.sources.length === 0) throw new ImageError('no sources');
  const target = ctx.devices[opts.target];
  if (!target?.spec.writable || !target.dev.write) throw new ImageError('the host did not grant the target for writing');
  let images = opts.sources.map((s) => openSource(ctx, s, opts));
  if (opts.snapshot !== undefined) images = snapshotViews(images, opts.snapshot);
  const dev = target.dev;
  // qemu opens the target as its format says before copying: its checks and its words.
  let opened: Image;
  try {
    opened = openTree(ctx, opts.target, { format: opts.format, fileName: opts.targetName, profile: opts.profile, unsafeQuirks: opts.unsafeQuirks, secrets: opts.secrets ?? {} });
  } catch (e) {
    if (e instanceof MissingFilesError) throw e;
    if (e instanceof ImageError && opts.missingSecret !== undefined && e.message === "Parameter 'key-secret' is required for cipher") {
      return { openFailed: `No secret with id '${opts.missingSecret}'` } satisfies ConvertIntoResult;
    }
    if (e instanceof ImageError) return { openFailed: e.message } satisfies ConvertIntoResult;
    throw e;
  }
  const foreign = opts.probedOptions?.find((k) => !(FORMAT_OPTIONS[opened.format] ?? []).includes(k));
  if (foreign !== undefined) return { openFailed: `Block format '${opened.format}' does not support the option '${foreign}'` } satisfies ConvertIntoResult;
  const disk = images.reduce((n, i) => n + i.virtualSize, 0);
  const fromBacking = opts.backingGiven && images.some((i) => i.info()['backing-filename'] !== undefined);
  const onProgress = opts.progress ? (done: number, total: number) => ctx.emit({ type: 'progress', done, total }) : undefined;
  const salvage = opts.salvage ? salvageMessages(ctx) : undefined;
  if (opened.format !== 'qcow2') {
    const refused = (why: string) => ({ refused: `instar cannot convert into an existing ${opened.format} image (-n) ${why}; nothing was written` });
    if (!IN_PLACE.has(opened.format)) return refused(opts.compressed ? 'with -c yet' : 'yet') satisfies ConvertIntoResult;
    // qcow's driver compresses (qemu would write compressed clusters); vmdk's takes compressed
    // writes into a plain sparse extent as plain ones (vmdk/inplace.ts); the others cannot.
    // qemu checks the driver's compression, then the size; instar's own refusal comes after both.
    if (opts.compressed && opened.format !== 'vmdk' && opened.format !== 'qcow') return { cannotCompress: true } satisfies ConvertIntoResult;
    if (opened.virtualSize < roundUp(disk)) return { tooSmall: true } satisfies ConvertIntoResult;
    if (opts.compressed && opened.format === 'qcow') return refused('with -c yet') satisfies ConvertIntoResult;
    if (fromBacking) return refused('with -B from a source that has a backing file') satisfies ConvertIntoResult;
    const target = plainInPlaceWriter(opened, dev, opts.vhdxGuids)
      ?? (opened.format === 'parallels' ? parallelsIntoTarget(ctx, opened, dev, opts.qemu ?? { major: 10, minor: 0 }, opts.parallelsDiscards === true)
        : opened.format === 'vmdk' ? vmdkInPlaceWriter(dev, opened as VmdkImage, { cid: opts.vmdkCid, compressed: opts.compressed })
        : luksTarget(opened) ?? luks2InPlaceTarget(opened, dev) ?? refused('yet'));
    if ('openFailed' in target) return target satisfies ConvertIntoResult;
    if ('refused' in target) return target satisfies ConvertIntoResult;
    const compressedClusterSize = opts.compressed ? (target as { grainBytes?: number }).grainBytes : undefined;
    try {
      const counted = copyInPlace({ images, target, sparseSize: opts.sparseSize ?? 4096, targetIsZero: opts.targetIsZero === true, onProgress, salvage, compressedClusterSize });
      return { counted } satisfies ConvertIntoResult;
    } catch (e) {
      if (e instanceof RequestFailed) return { writeFailed: e.message } satisfies ConvertIntoResult;
      throw e;
    }
  }
  const h = parseHeader(dev);
  const size = Number(h.size);
  // qemu asks the opened target for persistent bitmaps (version 3) before its size check.
  if (opts.bitmaps && h.version < 3) return { bitmapsUnsupported: true } satisfies ConvertIntoResult;
  if (h.size < BigInt(disk)) return { tooSmall: true } satisfies ConvertIntoResult;
  if (opts.compressed) return { refused: 'instar cannot convert into an existing qcow2 image (-n) with -c yet; nothing was written' } satisfies ConvertIntoResult;
  const cs = h.clusterSize;
  const hasBacking = opened.info()['backing-filename'] !== undefined;
  const why = fromBacking ? 'with -B from a source that has a backing file'
    : h.nbSnapshots > 0 ? 'it has internal snapshots'
    : undefined;
  if (why) return { refused: `instar cannot convert into this qcow2 image (${why}); nothing was written` } satisfies ConvertIntoResult;
  const recorder = new RequestRecorder(cs);
  const counted = copyToImage({ images, writer: recorder, sparseSize: opts.sparseSize ?? 4096, onProgress, unaligned: true, salvage, onZeros: (at, n) => recorder.zeroes(at, n) });
  try {
    const runs = clusterRuns(recorder.requests, disk, size, opts.targetIsZero === true, cs, (c) => readsZero(dev, h, c, hasBacking));
    // A cluster the disk ends inside keeps the target's bytes after the end (qemu writes in place,
    // or its copy-on-write fills a new cluster from the target's view): read before any write.
    const tail = Buffer.alloc(Math.min(roundUpTo(disk, cs), size) - disk);
    if (tail.length > 0) opened.read(tail, disk);
    const kept = opts.targetIsZero === true ? new KeptBytes(recorder.requests.filter((r) => !r.zero), disk, cs, (buf, at) => opened.read(buf, at)) : undefined;
    const read = (buf: Uint8Array, at: number) => {
      readDisk(images, buf, at, salvage !== undefined);
      kept?.overlay(buf, at);
      const from = Math.max(at, disk);
      const to = Math.min(at + buf.length, disk + tail.length);
      if (from < to) buf.set(tail.subarray(from - disk, to - disk), from - at);
    };
    const write = (target: BlockDevice, more: SessionOptions = {}) => planInPlaceWrite(target, runs, read, { hasBacking, unmap: true, ...more });
    // Bitmaps (or a stale extension): qemu's writable open and close around the copy; every
    // request it makes (the zeroing ones too, unless --target-is-zero skips them) is recorded.
    const dirtied = opts.targetIsZero === true ? recorder.requests.filter((r) => !r.zero).map((r): [number, number] => [r.offset, r.offset + r.length]) : [[0, disk] as [number, number]];
    const sourceList = opts.bitmaps ? sourceBitmaps(ctx, opts.sources[0], opts) ?? [] : [];
    let copied: AddedBitmaps | undefined;
    const adding = sourceList.length > 0 ? (loaded: readonly LiveBitmap[]) => (copied = addedBitmaps(h, h.size, loaded, sourceList)).added : undefined;
    const steps = openWritesBitmaps(dev) || adding ? inPlaceWithBitmaps(dev, write, dirtied, adding) : write(dev);
    applyRepair(dev, steps);
    if (copied) return { counted, bitmapWarnings: copied.warnings, ...(copied.failed !== undefined ? { bitmapFailed: copied.failed } : {}) } satisfies ConvertIntoResult;
  } catch (e) {
    if (e instanceof PlanRefusal) return { refused: e.message } satisfies ConvertIntoResult;
    throw e;
  }
  return { counted } satisfies ConvertIntoResult;
};
