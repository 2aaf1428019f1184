// A backing image's extent as qemu's block status answers it under an overlay's hole: the
// backing driver's own answer ends at its granule (a VMDK grain, a qcow2 L2 table's span), and
// the overlay's answer is no longer. convert's runs, chunks and -p steps follow those ends.
import type { Extent, Image } from './types.ts';

/** `below` (the backing's extent at `offset`) cut at the backing's granule, one level deeper. */
export function backingExtent(backing: Image, offset: number, below: Extent): Extent {
  const granule = backing.blockStatus;
  const length = typeof granule === 'number' && granule > 0 ? Math.min(below.length, (Math.floor(offset / granule) + 1) * granule - offset) : below.length;
  return { ...below, length, depth: below.depth + 1 };
}
