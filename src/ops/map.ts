// The guest half of `map`: walks the image's allocation status over the requested range and
// merges the runs the way qemu-img's map does (get_block_status + entry_mergeable), so the host
// only renders. Entries go to the host in bounded chunks, never as one message of any size.
import { ImageError, type Extent, type Image } from '../formats/types.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { MapEntry } from '../protocol/messages.ts';
import type { OpContext } from './types.ts';
import { errorWarnings } from '../guest/describe-error.ts';
import { FLAG } from './map-flags.ts';

export interface MapOptions extends OpenTreeOptions {
  /** --start-offset, decimal (up to 2^63-1, so a string). */
  start: string;
  /** --max-length, decimal; absent: to the end of the image. */
  maxLength?: string;
  /** Human output merges more (it does not tell zero from unallocated) and stops at unmappable data. */
  human: boolean;
  /** Only open the image and answer its format (the host words an --image-opts error with it). */
  formatOnly?: boolean;
}

/** What the op returns once every entry has been emitted. */
export interface MapResult {
  entries: number;
  format?: string;
  /** The image opened but qemu's size query fails: map stops after its header, the host words it. */
  sizeFailed?: true;
}

/** Entries per `map-entries` message: about 100 bytes each, far below the message limit. */
export const ENTRIES_PER_MESSAGE = 4096;

export { FLAG };

interface Entry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  compressed: boolean;
  /** Host offset as qemu's int64 (a VMDK flat extent can put it anywhere); none: no "offset"
   *  key, no file name. */
  offset?: bigint;
  /** Device index of the file holding `offset`; -1 with no offset. */
  file: number;
}

/** Device indices of the chain: [top, its backing, that one's backing, …]. */
function chainDevices(ctx: OpContext): number[] {
  const chain = [0];
  for (;;) {
    const below = ctx.devices.findIndex((d) => d.spec.referrer === chain[chain.length - 1] && d.spec.role === 'backing');
    if (below < 0 || chain.includes(below)) return chain;
    chain.push(below);
  }
}

function toEntry(e: Extent, ctx: OpContext, chain: number[]): Entry {
  const hasOffset = e.hostOffset !== undefined;
  let file = -1;
  if (hasOffset) {
    file = e.file ? ctx.devices.findIndex((d) => d.dev === e.file) : (chain[e.depth] ?? -1);
    if (file < 0) throw new ImageError('map: an extent names a file the op was not given');
  }
  return {
    start: e.offset,
    length: e.length,
    depth: e.depth,
    // The layer that answered has the bytes (or says they are zero); past the chain nobody does.
    present: e.kind !== 'unallocated',
    zero: e.kind !== 'data' || !!e.zeroData,
    data: e.kind === 'data',
    compressed: !!e.compressed,
    offset: hasOffset ? (e.hostOffsetExact ?? BigInt(e.hostOffset!)) : undefined,
    file,
  };
}

/** qemu's entry_mergeable. */
function mergeable(a: Entry, b: Entry): boolean {
  if (a.length === 0) return false;
  if (a.zero !== b.zero || a.data !== b.data || a.compressed !== b.compressed || a.depth !== b.depth || a.present !== b.present) return false;
  if (a.file !== b.file || (a.offset === undefined) !== (b.offset === undefined)) return false;
  return a.offset === undefined || BigInt.asIntN(64, a.offset + BigInt(a.length)) === b.offset;
}

const pack = (e: Entry): MapEntry => [
  e.start, e.length, e.depth,
  (e.present ? FLAG.present : 0) | (e.zero ? FLAG.zero : 0) | (e.data ? FLAG.data : 0) | (e.compressed ? FLAG.compressed : 0),
  wireOffset(e.offset), e.file,
];

/** -1 for none; a safe non-negative offset as a number; any other int64 as a decimal string. */
function wireOffset(offset: bigint | undefined): number | string {
  if (offset === undefined) return -1;
  return offset >= 0n && offset <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(offset) : BigInt.asIntN(64, offset).toString();
}

/**
 * The extent at `pos`. A driver's run may reach a broken table further on and fail where qemu's
 * answer would have stopped at the end of its own table (Image.blockStatus) and failed only at the
 * next call: then the shorter answer, so the entries before the failure come out as in qemu.
 */
function extentOrShorter(image: Image, pos: number, end: number, ctx: OpContext): Extent {
  try {
    return image.extent(pos, end - pos);
  } catch (e) {
    const granule = typeof image.blockStatus === 'number' && image.blockStatus > 0 ? image.blockStatus : 0;
    const stop = granule > 0 ? pos - (pos % granule) + granule : end;
    if (stop >= end) throw e;
    // What the driver printed on the way (qcow2 prints its corruption notice once) stays printed.
    for (const w of errorWarnings(e)) ctx.warn?.(w);
    return image.extent(pos, stop - pos);
  }
}

export function mapOp(options: Record<string, unknown>, ctx: OpContext): MapResult {
  const opts = options as unknown as MapOptions;
  const image = openTree(ctx, 0, opts);
  if (opts.formatOnly) return { entries: 0, format: image.format };
  // An empty first chunk tells the host the image opened: later failures are read errors.
  ctx.emit({ type: 'map-entries', entries: [] });
  // qemu prints the header (or '[') and then asks the size.
  if (image.sizeFailure) return { entries: 0, sizeFailed: true };
  const chain = chainDevices(ctx);
  const size = BigInt(image.virtualSize);
  const start = BigInt(opts.start);
  const wanted = opts.maxLength === undefined ? size : start + BigInt(opts.maxLength);
  const end = Number(wanted < size ? wanted : size);
  let batch: MapEntry[] = [];
  let count = 0;
  const flush = () => {
    if (batch.length > 0) ctx.emit({ type: 'map-entries', entries: batch });
    batch = [];
  };
  const dump = (e: Entry) => {
    batch.push(pack(e));
    count++;
    if (batch.length >= ENTRIES_PER_MESSAGE) flush();
  };
  // An empty range leaves qemu's initial entry (all false, length 0): the host prints that itself.
  if (start >= BigInt(end)) return { entries: 0 };
  let curr: Entry | undefined;
  let stopped = false;
  for (let pos = Number(start); pos < end; ) {
    let ext: Extent;
    try {
      ext = extentOrShorter(image, pos, end, ctx);
    } catch (e) {
      // qemu has printed every entry it finished before the failing block status: send them.
      flush();
      throw e;
    }
    if (!(ext.length > 0) || ext.offset !== pos) throw new ImageError('map: the driver returned an empty extent');
    const next = toEntry(ext, ctx, chain);
    pos += ext.length;
    if (curr && mergeable(curr, next)) {
      curr.length += next.length;
      continue;
    }
    if (curr) {
      dump(curr);
      if (opts.human) {
        // Human output stops at data it cannot place, as qemu's does.
        if (curr.data && curr.offset === undefined) {
          stopped = true;
          break;
        }
        // qemu's human form does not tell 0, ZERO and ZERO|DATA apart: it merges them.
        if (!next.data || next.zero) {
          next.data = false;
          next.zero = true;
        }
      }
    }
    curr = next;
  }
  if (curr && !stopped) dump(curr);
  flush();
  return { entries: count };
}
