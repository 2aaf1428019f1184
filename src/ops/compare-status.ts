// Block status as qemu's drivers answer it to `compare`, not as instar's drivers describe the
// image. compare's visible output depends on it: the steps of its walk decide which progress lines
// appear, and -s compares the status words themselves. instar's extents are coalesced runs; qemu's
// drivers stop earlier (qcow2 at the end of an L2 table, vmdk after each grain) or have no block
// status at all (vhdx: everything reads as data). Each image says which through `blockStatus`.
import type { Extent, Image } from '../formats/types.ts';

/** The extent qemu's driver would report at `offset`, given instar's own. */
export type StatusView = (offset: number, end: number) => Extent;

/** Where qemu's driver ends one block-status answer that starts at `offset`. */
function boundary(granule: number | undefined, offset: number): number {
  if (!granule || !(granule > 0)) return Infinity;
  return offset - (offset % granule) + granule;
}

export function statusView(image: Image): StatusView {
  const status = image.blockStatus;
  const granule = typeof status === 'number' ? status : undefined;
  // The last answer: compare walks a long run in IO_BUF_SIZE steps, and asking the driver again
  // from inside the run gives the rest of the same run (qemu asks again; instar need not rescan).
  let last: Extent | undefined;
  let lastEnd = 0;
  return (offset, end) => {
    // No block status in qemu's driver: the generic layer calls it all data, unmapped.
    if (status === 'none') return { offset, length: end - offset, kind: 'data', depth: 0 };
    if (last && end === lastEnd && offset > last.offset && offset < last.offset + last.length) {
      const skipped = offset - last.offset;
      const rest: Extent = { ...last, offset, length: last.length - skipped };
      if (rest.hostOffset !== undefined) rest.hostOffset += skipped;
      return rest;
    }
    const limit = Math.min(end, boundary(granule, offset));
    last = image.extent(offset, limit - offset);
    lastEnd = end;
    return last;
  };
}

/**
 * Where the run of extents from `offset` that `skippable` accepts ends (at most `end`), asked of
 * the driver in long requests rather than qemu's per-grain ones: compare skips regions both images
 * read as zeros without reading them, and when neither -p nor -s shows its steps, how many steps
 * qemu took there is invisible. A failing request ends the run: the per-step walk then meets the
 * failure where qemu meets it.
 */
export function skippableRunEnd(image: Image, offset: number, end: number, skippable: (e: Extent) => boolean, onError?: (e: unknown) => void): number {
  if (image.blockStatus === 'none') return offset;
  let pos = offset;
  try {
    while (pos < end) {
      const e = image.extent(pos, end - pos);
      if (!(e.length > 0) || !skippable(e)) break;
      pos = Math.min(end, pos + e.length);
    }
  } catch (e) {
    // The error belongs to the step that reaches it; but what the driver said only the first time
    // (qcow2's corruption notice) rides on this error, so the caller keeps it for that step.
    onError?.(e);
  }
  return pos;
}
