// Holes in formats with backing files (qcow, qed): they show the backing image's bytes, and
// zeros past its end or without one, as qemu's block layer reads them.
import type { Extent, Image } from '../types.ts';
import { sizeFailureError } from '../sector-count.ts';

/** Fills `part` (guest bytes at `pos`) from the backing image, zeros where it has none. */
export function readFromBacking(backing: Image | undefined, part: Uint8Array, pos: number): void {
  // qemu asks the backing file's size before any read of it, past its end too: that fails.
  if (backing?.sizeFailure) throw sizeFailureError(backing.sizeFailure);
  const n = Math.max(0, Math.min(part.length, (backing?.virtualSize ?? 0) - pos));
  if (n > 0) backing!.read(part.subarray(0, n), pos);
  part.fill(0, n);
}

/** An unallocated extent of this image, refined by what the backing chain has there. */
export function extentBelow(backing: Image | undefined, hole: Extent): Extent {
  if (!backing) return hole;
  // One whose size qemu cannot tell fails its block status wherever the hole is.
  if (backing.sizeFailure) throw sizeFailureError(backing.sizeFailure);
  if (hole.offset >= backing.virtualSize) return hole;
  const below = backing.extent(hole.offset, Math.min(hole.length, backing.virtualSize - hole.offset));
  return { ...below, depth: below.depth + 1 };
}
