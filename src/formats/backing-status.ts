// A backing image's extent as qemu's block status answers it under an overlay's hole: the
// backing driver's own answer ends at its granule (a VMDK grain, a qcow2 L2 table's span), and
// the overlay's answer is no longer. convert's runs, chunks and -p steps follow those ends.
import type { Extent, Image } from './types.ts';

/** The backing's extent at `offset` (at most `length`), cut at its granule, one level deeper. */
export function backingExtent(backing: Image, offset: number, length: number): Extent {
  const granule = backing.blockStatus;
  // Asked no further than the granule: a VMDK's extent() would otherwise walk its grain tables
  // over the whole hole for every grain of it.
  const n = typeof granule === 'number' && granule > 0 ? Math.min(length, (Math.floor(offset / granule) + 1) * granule - offset) : length;
  const below = backing.extent(offset, n);
  return { ...below, depth: below.depth + 1 };
}
