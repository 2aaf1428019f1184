// The guest half of `measure`: opens the input (backing chain and all) as qemu-img measure does,
// optionally through an internal snapshot, and walks its block status once. It answers, for every
// output cluster size qcow2 allows, how many bytes of clusters would hold data, so the host can
// check the creation options afterwards, in qemu's order, and compute the sizes itself.
import { ImageError, type Image } from '../formats/types.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import { snapshotViews, type SnapshotChoice } from './convert/sources.ts';
import { strerror } from '../strerror.ts';
import type { OpContext } from './types.ts';
import { MAX_WARNINGS, type GuestWarning } from '../protocol/messages.ts';
import { errorWarnings } from '../guest/describe-error.ts';

export interface MeasureOptions extends OpenTreeOptions {
  /** -l: the internal snapshot to measure instead of the active disk. */
  snapshot?: SnapshotChoice;
}

/** Output cluster sizes: 2^9 … 2^21 (qcow2's range; raw needs none). */
export const CLUSTER_BITS = { min: 9, max: 21 } as const;

export interface MeasureOpResult {
  format: string;
  virtualSize: number;
  /** bdrv_getlength fails: the errno (a C int). */
  sizeErrno?: number;
  /** Bytes of data clusters for cluster size 2^(9 + i), decimal (index i). */
  dataBytes: string[];
  /** The walk failed: qemu's reason (strerror text); dataBytes are then zeros. */
  blockStatusError?: string;
  /** What the driver printed during the walk (qcow2's corruption notice): qemu prints it only if it walks. */
  statusWarnings?: GuestWarning[];
  /** -l failed: qemu's whole message ("Failed to load snapshot: …"). */
  snapshotError?: string;
  /** The input's persistent bitmaps, when its format carries them. */
  bitmaps?: { nameBytes: number; granularity: number }[];
}

/** Longest run asked of a driver at once: keeps each answer's work bounded. */
const MAX_REQUEST = 2 ** 40;

/**
 * Counts, per cluster size, the clusters that any data byte touches (qemu's loop: a data run is
 * extended to its cluster's end and whole clusters are counted; zero and unallocated runs are skipped).
 */
class ClusterCounter {
  private readonly bytes: bigint[] = [];
  /** Per cluster size: the end (in clusters) of the last cluster already counted. */
  private readonly countedEnd: number[] = [];

  constructor() {
    for (let b = CLUSTER_BITS.min; b <= CLUSTER_BITS.max; b++) {
      this.bytes.push(0n);
      this.countedEnd.push(0);
    }
  }

  data(start: number, end: number): void {
    for (let i = 0; i < this.bytes.length; i++) {
      const size = 2 ** (CLUSTER_BITS.min + i);
      const first = Math.max(Math.floor(start / size), this.countedEnd[i]);
      const last = Math.ceil(end / size);
      if (last <= first) continue;
      this.bytes[i] += BigInt(last - first) * BigInt(size);
      this.countedEnd[i] = last;
    }
  }

  result(): string[] {
    return this.bytes.map((b) => b.toString());
  }
}

/** The data runs of the whole disk, as qemu's bdrv_block_status_above over the chain sees them. */
function walk(image: Image, counter: ClusterCounter): void {
  const size = image.virtualSize;
  // A driver without block status: qemu's generic layer calls every byte allocated data.
  if (image.blockStatus === 'none') {
    if (size > 0) counter.data(0, size);
    return;
  }
  for (let pos = 0; pos < size; ) {
    const e = image.extent(pos, Math.min(size - pos, MAX_REQUEST));
    if (!(e.length > 0) || e.offset !== pos || e.length > size - pos) throw new ImageError('measure: the driver returned a bad extent');
    // DATA|ZERO (a hole in the file under allocated data) counts as zero, as in qemu.
    if (e.kind === 'data' && !e.zeroData) counter.data(pos, pos + e.length);
    pos += e.length;
  }
}


/** Whether the emulated qemu's driver of this image says it can carry persistent bitmaps. */
function carriesBitmaps(image: Image, profile: unknown): boolean {
  const since = image.persistentBitmapsSince;
  if (!since) return true;
  // The host sends its version profile; the newest behaviour without one.
  const { major, minor } = (profile ?? {}) as { major?: unknown; minor?: unknown };
  if (typeof major !== 'number' || typeof minor !== 'number') return true;
  return major > since.major || (major === since.major && minor >= since.minor);
}

export function measureOp(options: Record<string, unknown>, ctx: OpContext): MeasureOpResult {
  const opts = options as unknown as MeasureOptions;
  const top = openTree(ctx, 0, opts);
  const bitmaps = carriesBitmaps(top, opts.profile) ? top.persistentBitmaps?.map((b) => ({ nameBytes: Buffer.byteLength(b.name, 'utf8'), granularity: b.granularity })) : undefined;
  const counter = new ClusterCounter();
  const result: MeasureOpResult = { format: top.format, virtualSize: top.virtualSize, dataBytes: counter.result(), bitmaps };
  let image = top;
  if (opts.snapshot) {
    try {
      image = snapshotViews([top], opts.snapshot)[0];
    } catch (e) {
      if (!(e instanceof ImageError)) throw e;
      return { ...result, virtualSize: 0, snapshotError: e.message };
    }
  }
  if (image.sizeFailure) return { ...result, virtualSize: 0, sizeErrno: image.sizeFailure.errno };
  try {
    walk(image, counter);
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
    const statusWarnings = errorWarnings(e).slice(0, MAX_WARNINGS);
    return { ...result, blockStatusError: strerror(e.errno ?? 'EIO'), statusWarnings: statusWarnings.length > 0 ? statusWarnings : undefined };
  }
  return { ...result, dataBytes: counter.result() };
}
