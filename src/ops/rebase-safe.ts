// Safe `rebase` (no -u) for qcow2 and qed images: qemu-img's copy loop (img_rebase). Wherever the top
// allocates nothing and the old backing chain reads differently from the new one, the old content
// is written into the top (formats/qcow2/inplace-write.ts, or the driver's rebaseCopy for qed:
// allocating as qemu's driver does), then the header names the new backing file. The loop goes over unallocated runs of the top in
// chunks of 2 MiB as qemu's does (7.2 also ends a chunk where a backing file ends), so that -p
// prints qemu's percentages; a chunk's differing
// clusters are what qemu writes (7.2 compares 512-byte sectors, but its partial writes of a
// cluster copy the rest of it from the old backing file: the same clusters end up allocated with
// the same bytes as 8.2+'s cluster-wise loop).
import { posix } from 'node:path';
import { ImageError, type BlockDevice, type HeaderChangePlan, type Image } from '../formats/types.ts';
import { applyRepair, writeCount, type RepairStep } from '../formats/repair.ts';
import { planInPlaceWrite, type ClusterRun, type GuestSource } from '../formats/qcow2/inplace-write.ts';
import { aroundBitmaps, openWritesBitmaps } from '../formats/qcow2/bitmap-session.ts';
import { planChangeBackingOpened } from '../formats/qcow2/rebase-unsafe.ts';
import { ReplayedDevice } from '../formats/replayed-device.ts';
import { parseHeader } from '../formats/qcow2/header.ts';
import { PlanRefusal } from '../formats/qcow2/refcount-update.ts';
import { findDriver } from '../formats/registry.ts';
import { isRawFallbackRefusal } from '../formats/detect.ts';
import { ProgressRule } from '../output/progress.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { OpContext } from './types.ts';

/** qemu-img's IO_BUF_SIZE. */
const IO_BUF_SIZE = 2 * 1024 * 1024;

export interface SafeRebaseOptions extends OpenTreeOptions {
  backing?: string;
  backingFormat?: string;
  /** qemu 8.2+: a chunk's read is not cut at the old backing file's end. */
  clusterLoop?: boolean;
  /** -c (8.2+): the copied clusters compressed. */
  compress?: boolean;
  stopAfterWrites?: number;
}

/** -p's percentages as [value, times printed] (once at 100%, qemu prints one line per chunk). */
export type ProgressRuns = [number, number][];

export type SafeRebaseResult = { format: string; progress: ProgressRuns } & (
  | { done: true }
  | { errno: 'ENOSPC' | 'EINVAL' | 'ENOTSUP' }
  | { refused: string }
  /** qemu's open of the new backing file failed (its format is not -F's, say): the reason. */
  | { newBackingFailed: string });

/** Reads `buf.length` bytes of `image` at `offset`, zeros past its end (or everywhere without an image). */
function readPadded(image: Image | undefined, buf: Buffer, offset: number): void {
  buf.fill(0);
  if (!image || offset >= image.virtualSize) return;
  image.read(buf.subarray(0, Math.min(buf.length, image.virtualSize - offset)), offset);
}

/**
 * bdrv_is_allocated of the top alone: whether it allocates `offset` and for how many bytes (at
 * most `n`) that stays so. The chain's extents split where the backing files' do; joined here.
 */
function topRun(top: Image, offset: number, n: number, levels = 1): { allocated: boolean; length: number; hosted?: boolean } {
  // No level between top and base (the new backing file is the old one): qemu answers
  // "unallocated" for the whole request without asking the image.
  if (levels === 0) return { allocated: false, length: n };
  // Past the end of the old backing file qemu's status is "0 bytes": 8.2+ then copies the whole
  // chunk (zeros where the new chain differs); 7.2 loops there forever, instar does as 8.2+.
  if (offset >= top.virtualSize) return { allocated: true, length: n };
  n = Math.min(n, top.virtualSize - offset);
  // One level: qemu asks that image alone, and each answer is one turn of its loop (one progress
  // step), also where two kinds of hole meet (extended L2: a hole in an allocated cluster).
  if (levels === 1 && top.ownExtent) {
    const own = top.ownExtent(offset, n);
    if (!(own.length > 0)) throw new ImageError('the image reported an empty extent');
    return { allocated: own.kind !== 'unallocated', length: Math.min(own.length, n), hosted: own.hostOffset !== undefined };
  }
  const inTop = (e: { depth: number; kind: string }) => e.depth < levels && e.kind !== 'unallocated';
  let length = 0;
  let allocated: boolean | undefined;
  while (length < n) {
    const e = top.extent(offset + length, n - length);
    if (!(e.length > 0)) throw new ImageError('the image reported an empty extent');
    if (allocated === undefined) allocated = inTop(e);
    else if (inTop(e) !== allocated) break;
    length += Math.min(e.length, n - length);
  }
  return { allocated: allocated ?? false, length };
}

/**
 * qemu's bdrv_find_backing_image for the new backing file: the level (1 = the top's backing file)
 * of the old chain whose name, taken relative to the directory of the image naming it, is the
 * new name; 0 when the new backing file is not in the old chain.
 */
function prefixLevel(ctx: OpContext, name: string): number {
  const wanted = posix.normalize(name);
  let dir = '.';
  for (let level = 1, referrer = 0; ; level++) {
    const index = backingIndex(ctx, referrer);
    const named = ctx.devices[index]?.spec.name;
    if (index < 0 || named === undefined || level > 32) return 0;
    const path = posix.isAbsolute(named) ? named : posix.join(dir, named);
    if (posix.normalize(path) === wanted) return level;
    dir = posix.dirname(path);
    referrer = index;
  }
}

/**
 * The image at `level` of the old chain (1 = `oldImage`, the top's backing file), opened in the
 * format its referrer's header names, as qemu's open of the chain did.
 */
function chainLevel(ctx: OpContext, oldImage: Image, level: number, opts: OpenTreeOptions): Image {
  let image = oldImage;
  for (let k = 2, referrer = backingIndex(ctx, 0); k <= level; k++) {
    const index = backingIndex(ctx, referrer);
    if (index < 0) throw new ImageError('the old backing chain is shorter than its names say');
    image = image.backingImage ?? openTree(ctx, index, { ...opts, fileName: undefined, format: image.info()['backing-filename-format'] });
    referrer = index;
  }
  return image;
}

/** qemu 7.2 compares 512-byte sectors. */
const SECTOR = 512;

/**
 * The write requests qemu makes for one chunk: runs of consecutive differing blocks (`block`
 * bytes: sectors in 7.2, qemu's write_align in 8.2+), each widened to whole units of `align`
 * bytes (clusters; subclusters with extended L2 entries). A request writes zeros when the chunk
 * (7.2: `chunkZero`) or the run (8.2+) starts past the old backing file. `cs`: the piece read at once.
 */
function chunkRequests(offset: number, n: number, block: number, align: number, cs: number, readOld: (b: Buffer, at: number) => void, readNew: (b: Buffer, at: number) => void, chunkZero: boolean | undefined, oldSize: number, dirtied: [number, number][]): ClusterRun[] {
  const requests: ClusterRun[] = [];
  const oldBuf = Buffer.alloc(cs);
  const newBuf = Buffer.alloc(cs);
  let runStart = -1;
  const close = (end: number) => {
    if (runStart < 0) return;
    const first = Math.floor(runStart / align) * align;
    // The request as qemu makes it (not widened): what dirty bitmaps record.
    dirtied.push([runStart, end]);
    requests.push({ offset: first, length: Math.ceil(end / align) * align - first, zero: chunkZero ?? runStart >= oldSize });
    runStart = -1;
  };
  // Pieces of at most one cluster, so that buffers stay small; blocks never straddle pieces
  // (a chunk starts on a sector, in 8.2+ on a cluster).
  for (let at = offset; at < offset + n;) {
    const len = Math.min(Math.floor(at / cs) * cs + cs, offset + n) - at;
    readOld(oldBuf.subarray(0, len), at);
    readNew(newBuf.subarray(0, len), at);
    for (let b = 0; b < len; b += block) {
      const e = Math.min(b + block, len);
      const differs = !oldBuf.subarray(b, e).equals(newBuf.subarray(b, e));
      if (differs && runStart < 0) runStart = at + b;
      if (!differs) close(at + b);
    }
    at += len;
  }
  close(offset + n);
  return requests;
}

/** Device index of the backing file `referrer` names, when the host granted it. */
const backingIndex = (ctx: OpContext, referrer: number): number => ctx.devices.findIndex((d) => d.spec.referrer === referrer && d.spec.role === 'backing');

export function safeRebase(opts: SafeRebaseOptions, ctx: OpContext, top: Image): SafeRebaseResult {
  const format = top.format;
  const refused = (why: string): SafeRebaseResult => ({ format, progress: [], refused: `${why}; nothing was written` });
  const dev = ctx.devices[0].dev;
  const oldIndex = backingIndex(ctx, 0);
  const oldImage = oldIndex < 0 ? undefined : openTree(ctx, oldIndex, { ...opts, fileName: undefined, format: top.info()['backing-filename-format'] });
  const newBacking = opts.backing !== undefined && opts.backing !== '';
  const prefix = newBacking ? prefixLevel(ctx, opts.backing!) : 0;
  let newImage: Image | undefined;
  try {
    // A new backing file from the old chain is the image already open there (qemu reuses that
    // node): -F plays no part in opening it, only in the header written.
    newImage = prefix > 0 && oldImage ? chainLevel(ctx, oldImage, prefix, opts)
      : newBacking ? openTree(ctx, 1, { ...opts, fileName: opts.backing, format: opts.backingFormat }) : undefined;
  } catch (e) {
    // Without -F, qemu opens a file it probes as raw, copies, then fails to name it in the header
    // (the block layer wants a backing format): its words, with nothing read as raw or written.
    if (isRawFallbackRefusal(e) && opts.backingFormat === undefined) return { format, progress: [], errno: 'EINVAL' };
    // A plain failure only: files still needed (MissingFilesError) go back to the host.
    if (e instanceof ImageError && e.constructor === ImageError) return { format, progress: [], newBackingFailed: e.message };
    throw e;
  }
  const oldSize = oldImage?.virtualSize ?? 0;
  const driver = findDriver(format);
  // The top's cluster size (8.2+ compares whole clusters); formats instar does not copy into
  // only learn whether anything differs (then refused): sectors will do.
  const header = format === 'qcow2' ? parseHeader(dev) : undefined;
  const cs = header ? header.clusterSize : driver?.rebaseCopy ? Number(top.info()['cluster-size'] ?? SECTOR) : SECTOR;
  // qemu's write_align: the subcluster size with extended L2 entries (the cluster size with -c);
  // the driver allocates only the subclusters a write covers.
  const align = header?.extendedL2 && !opts.compress ? cs / 32 : cs;
  const size = top.virtualSize;
  const runs: ClusterRun[] = [];
  const dirtied: [number, number][] = [];
  const progress: ProgressRuns = [];
  const rule = new ProgressRule(2.0);
  const step = size === 0 ? 0 : Math.fround(100 / Math.floor(size / Math.min(size, IO_BUF_SIZE)));
  /** Where the last request's units end, and the last cluster a data request wrote into. */
  let writtenTo = 0;
  let hostedCluster = -1;
  for (let offset = 0, n = 0; offset < size; offset += n) {
    n = Math.min(IO_BUF_SIZE, size - offset);
    // qcow2's block status answers up to the end of one L2 table's span.
    if (typeof top.blockStatus === 'number') n = Math.min(n, (Math.floor(offset / top.blockStatus) + 1) * top.blockStatus - offset);
    // qemu asks the top as its own earlier writes left it: the unit a write widened past the
    // previous chunk's end is allocated now, and a hole in a cluster a write gave a host to ends
    // with that cluster (its subclusters are "unallocated-alloc" now, the next cluster's are not).
    if (format === 'qcow2' && offset < writtenTo) {
      n = Math.min(n, writtenTo - offset);
      continue;
    }
    const run = topRun(top, offset, n);
    n = run.length;
    if (run.allocated) continue;
    if (format === 'qcow2' && run.hosted === false && Math.floor(offset / cs) === hostedCluster) n = Math.min(n, (hostedCluster + 1) * cs - offset);
    // A new backing file from the old chain: only what the images above it allocate can differ.
    if (prefix > 0) {
      const above = oldImage ? topRun(oldImage, offset, n, prefix - 1) : { allocated: false, length: n };
      n = above.length;
      if (!above.allocated) continue;
    }
    // 7.2 reads each backing file no further than its end: the chunk ends there.
    if (!opts.clusterLoop && offset < oldSize && offset + n > oldSize) n = oldSize - offset;
    if (!opts.clusterLoop && newImage && offset < newImage.virtualSize && offset + n > newImage.virtualSize) n = newImage.virtualSize - offset;
    const requests = chunkRequests(offset, n, opts.clusterLoop ? align : SECTOR, align, cs, (buf, at) => readPadded(oldImage, buf, at), (buf, at) => readPadded(newImage, buf, at), opts.clusterLoop ? undefined : offset >= oldSize, oldSize, dirtied);
    runs.push(...requests);
    const last = requests[requests.length - 1];
    if (last) writtenTo = last.offset + last.length;
    const lastData = requests.filter((r) => !r.zero).pop();
    if (lastData) hostedCluster = Math.floor((lastData.offset + lastData.length - 1) / cs);
    const shown = rule.set(Math.fround(rule.value + Math.fround(Math.fround(step / 100) * 100)));
    if (shown !== undefined) {
      const last = progress[progress.length - 1];
      if (last && last[0] === shown) last[1]++;
      else progress.push([shown, 1]);
    }
  }
  if (format !== 'qcow2' && runs.length > 0 && !driver?.rebaseCopy) return refused(`instar copies data in a safe rebase of qcow2 and qed images only (this is ${format}); use -u to change only the backing file name`);
  // Nothing to copy into another format: qemu's block layer then wants a backing format, and a
  // driver that can change a backing file (qed can; raw, vpc, vhdx, vmdk cannot).
  if (format !== 'qcow2' && runs.length === 0 && (!driver?.changeBacking || (newBacking && opts.backingFormat === undefined))) {
    return { format, progress, errno: newBacking && opts.backingFormat === undefined ? 'EINVAL' : 'ENOTSUP' };
  }
  const source: GuestSource = (buf, at) => readPadded(oldImage, Buffer.from(buf.buffer, buf.byteOffset, buf.length), at);
  const backing = newBacking ? Buffer.from(opts.backing!) : undefined;
  const backingFormat = backing && typeof opts.backingFormat === 'string' ? Buffer.from(opts.backingFormat) : undefined;
  let dataSteps: RepairStep[];
  let plan: HeaderChangePlan;
  // qemu writes while the top still has its old backing file: without one, a version 2 image's
  // zero writes are discards (no cluster allocated), whatever the new backing file.
  const writingOverBacking = oldImage !== undefined;
  try {
    if (format !== 'qcow2') {
      // qemu's requests exactly as it makes them (the driver allocates by them), each with its kind.
      const requests = dirtied.map(([start, end], i) => ({ offset: start, length: end - start, zero: runs[i].zero }));
      const copy = runs.length > 0 ? driver!.rebaseCopy!(dev, requests, source) : [];
      if ('refused' in copy) return { format, progress: [], refused: copy.refused };
      dataSteps = copy;
      plan = driver!.changeBacking!(dev, backing, backingFormat);
    } else if (runs.length > 0 && openWritesBitmaps(dev)) {
      // Persistent bitmaps: the copy and the header change between qemu's open and close.
      ({ dataSteps, plan } = copyWithBitmaps(dev, runs, source, { hasBacking: writingOverBacking, compress: opts.compress, subclusters: true }, backing, backingFormat, dirtied));
    } else {
      // Nothing to copy: only the header changes (an image instar could not write into included).
      dataSteps = runs.length > 0 ? planInPlaceWrite(dev, runs, source, { hasBacking: writingOverBacking, compress: opts.compress, subclusters: true }) : [];
      plan = findDriver(format)!.changeBacking!(dev, backing, backingFormat);
    }
  } catch (e) {
    if (e instanceof PlanRefusal) return { format, progress: [], refused: e.message };
    throw e;
  }
  if ('refused' in plan) return { format, progress: [], refused: plan.refused };
  const stop = typeof opts.stopAfterWrites === 'number' ? opts.stopAfterWrites : Infinity;
  applyRepair(dev, dataSteps, { stopAfterWrites: stop });
  const left = stop - writeCount(dataSteps);
  // qemu copies first, then fails to change the header (a new backing file without its format).
  if ('errno' in plan) {
    if (left > 0) applyRepair(dev, plan.steps ?? [], { stopAfterWrites: left });
    return { format, progress, errno: plan.errno };
  }
  if (left > 0) applyRepair(dev, plan.steps, { stopAfterWrites: left });
  return { format, progress, done: true };
}

/**
 * The copy planned inside qemu's writable open and close (bitmap-session.ts): the open marks the
 * bitmaps in use, the enabled ones record the copy's requests, the header names the new backing
 * file, and the close stores them anew, also when the header change fails (its errno kept).
 */
function copyWithBitmaps(dev: BlockDevice, runs: ClusterRun[], source: GuestSource, write: { hasBacking: boolean; compress?: boolean; subclusters?: boolean }, backing: Uint8Array | undefined, format: Uint8Array | undefined, dirtied: [number, number][]): { dataSteps: RepairStep[]; plan: HeaderChangePlan } {
  let errno: 'ENOSPC' | 'EINVAL' | 'ENOTSUP' | undefined;
  const session = aroundBitmaps(dev, (opened) => {
    const after: { freeClusterIndex?: number } = {};
    const data = planInPlaceWrite(opened, runs, source, { ...write, bitmapsOpened: true, after });
    const header = planChangeBackingOpened(data.length > 0 ? new ReplayedDevice(opened, data) : opened, backing, format);
    if ('refused' in header) throw new PlanRefusal(header.refused);
    const steps = [...data, { kind: 'barrier' } as const, ...(header.steps ?? [])];
    // A failed header change still leaves the copy recorded and the bitmaps stored at close.
    if ('errno' in header) errno = header.errno;
    return { steps, freeClusterIndex: after.freeClusterIndex, dirtied };
  });
  // The whole session is one plan: the executor below runs the data steps, then the rest.
  return { dataSteps: session.steps, plan: errno ? { errno, steps: [] } : { steps: [] } };
}
