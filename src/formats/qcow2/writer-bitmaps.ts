// Persistent dirty bitmaps stored into a qcow2 image at close, as qemu's
// qcow2_store_persistent_dirty_bitmaps does: for each bitmap in directory order its dirty
// chunks (one cluster each, allocated one by one), then its table; then the directory; then the
// header with the bitmaps extension and its autoclear bit. qemu-img convert --bitmaps adds the
// source's bitmaps to the new image after the copy, so the allocator is the writer's own, in the
// state the copy left it. `qemu-img bitmap` (bitmap-plan.ts) stores each bitmap the same way.
import type { BlockDevice } from '../types.ts';
import { DirtyBits } from './bitmap-bits.ts';
import { FLAG_AUTO, serializeDirectory, type DirBitmap } from './bitmap-dir.ts';
import { AUTOCLEAR, parseHeader } from './header.ts';
import { readHeaderModel } from './header-model.ts';
import { serializeHeader } from './header-write.ts';

/** A bitmap the new image gets (qemu's BdrvDirtyBitmap: persistent, consistent); `bits` are the source's, merged in. */
export interface NewBitmap {
  name: Buffer;
  granularityBits: number;
  enabled: boolean;
  bits: DirtyBits;
}

/** Allocates `bytes` (whole clusters, referenced once) and returns the byte offset of the first. */
export type ClusterAlloc = (bytes: number) => number;

/**
 * store_bitmap: a cluster for each chunk with a dirty bit (written whole), then the table
 * (tableSize entries, written without padding); where the table went.
 */
export function storeBitmapData(bits: DirtyBits, alloc: ClusterAlloc, write: (pos: number, bytes: Uint8Array) => void): { offset: bigint; size: number } {
  const table = Buffer.alloc(bits.chunkCount * 8);
  for (const i of bits.dirtyChunks()) {
    const offset = alloc(bits.clusterSize);
    table.writeBigUInt64BE(BigInt(offset), i * 8);
    write(offset, bits.chunk(i));
  }
  const offset = alloc(table.length);
  write(offset, table);
  return { offset: BigInt(offset), size: bits.chunkCount };
}

/**
 * block-dirty-bitmap-add at the source's granularity, then the merge of the source's bits: the
 * same bit string, cut into this image's clusters (byte by byte, so that a bitmap of scattered
 * bits costs its size, not its number of runs).
 */
function atClusterSize(bm: NewBitmap, clusterSize: number): DirtyBits {
  const src = bm.bits;
  if (src.clusterSize === clusterSize && src.granularityBits === bm.granularityBits) return src;
  const bits = new DirtyBits(src.virtualSize, bm.granularityBits, clusterSize);
  if (src.granularityBits !== bm.granularityBits) {
    bits.mergeFrom(src);
    return bits;
  }
  const wanted = new Set<number>();
  for (const i of src.dirtyChunks()) {
    const first = Math.floor((i * src.clusterSize) / clusterSize);
    const last = Math.floor(((i + 1) * src.clusterSize - 1) / clusterSize);
    for (let j = first; j <= Math.min(last, bits.chunkCount - 1); j++) wanted.add(j);
  }
  const cache = new Map<number, Uint8Array>();
  const srcChunk = (i: number) => {
    let c = cache.get(i);
    if (!c) {
      c = src.chunk(i);
      cache.clear(); // chunks are visited in ascending order: one or two are live at a time
      cache.set(i, c);
    }
    return c;
  };
  for (const j of [...wanted].sort((a, b) => a - b)) {
    const out = new Uint8Array(clusterSize);
    for (let at = 0; at < clusterSize;) {
      const byte = j * clusterSize + at;
      const i = Math.floor(byte / src.clusterSize);
      if (i >= src.chunkCount) break;
      const from = byte - i * src.clusterSize;
      const n = Math.min(clusterSize - at, src.clusterSize - from);
      out.set(srcChunk(i).subarray(from, from + n), at);
      at += n;
    }
    bits.loadChunk(j, out);
  }
  return bits;
}

/**
 * Stores `list` into an image without bitmaps (a new image): data and tables, the directory,
 * then the first cluster rewritten with the bitmaps extension. Returns the end of the last write.
 */
export function storeNewBitmaps(dev: BlockDevice, list: readonly NewBitmap[], alloc: ClusterAlloc, clusterSize: number): number {
  if (list.length === 0) return 0;
  let end = 0;
  const write = (pos: number, bytes: Uint8Array) => {
    dev.write!(bytes, pos);
    end = Math.max(end, pos + bytes.length);
  };
  const dir: DirBitmap[] = list.map((bm) => {
    const t = storeBitmapData(atClusterSize(bm, clusterSize), alloc, write);
    return { name: bm.name, tableOffset: t.offset, tableSize: t.size, flags: bm.enabled ? FLAG_AUTO : 0, granularityBits: bm.granularityBits };
  });
  const bytes = serializeDirectory(dir);
  const offset = alloc(bytes.length);
  write(offset, bytes);
  // qcow2_update_header: the image's own header as qemu holds it, now naming the directory.
  const model = readHeaderModel(dev, parseHeader(dev));
  model.bitmaps = { count: dir.length, directorySize: BigInt(bytes.length), directoryOffset: BigInt(offset) };
  model.autoclear |= AUTOCLEAR.bitmaps;
  dev.write!(serializeHeader(model), 0);
  return end;
}
