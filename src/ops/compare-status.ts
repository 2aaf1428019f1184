// Block status as qemu's drivers answer it to `compare`, not as instar's drivers describe the
// image. compare's visible output depends on it: the steps of its walk decide which progress lines
// appear, and -s compares the status words themselves. instar's extents are coalesced runs; qemu's
// drivers stop earlier (qcow2 at the end of an L2 table, vmdk after each grain) or have no block
// status at all (vhdx: everything reads as data). This is the one place that knows those limits.
import type { Extent, Image } from '../formats/types.ts';

/** The extent qemu's driver would report at `offset`, given instar's own. */
export type StatusView = (offset: number, end: number) => Extent;

/** Bytes one qcow2 L2 table covers (qemu's default L2 slice is the whole table). */
function qcow2TableCoverage(image: Image): number | undefined {
  const info = image.info();
  const clusterSize = info['cluster-size'];
  if (!clusterSize) return undefined;
  const extended = (info['format-specific']?.data as { 'extended-l2'?: boolean } | undefined)?.['extended-l2'];
  return clusterSize * (clusterSize / (extended ? 16 : 8));
}

/** Where qemu's driver ends one block-status answer that starts at `offset`. */
function boundary(format: string, granule: number | undefined, offset: number): number {
  if (!granule || !(granule > 0) || (format !== 'qcow2' && format !== 'vmdk')) return Infinity;
  return offset - (offset % granule) + granule;
}

/**
 * `fileIsHole`: a raw image whose file has no blocks allocated at all. qemu's file driver asks the
 * kernel (SEEK_DATA) and reports such a file as one zero run; the guest cannot seek holes, but a
 * file with no blocks is all hole, which is what `qemu-img create -f raw` makes.
 */
export function statusView(image: Image, fileIsHole = false): StatusView {
  const format = image.format;
  let granule: number | undefined;
  if (format === 'qcow2') granule = qcow2TableCoverage(image);
  else if (format === 'vmdk') granule = image.info()['cluster-size'];
  // The last answer: compare walks a long run in IO_BUF_SIZE steps, and asking the driver again
  // from inside the run gives the rest of the same run (qemu asks again; instar need not rescan).
  let last: Extent | undefined;
  let lastEnd = 0;
  return (offset, end) => {
    if (fileIsHole && format === 'raw') return { offset, length: end - offset, kind: 'zero', depth: 0, hostOffset: offset };
    if (format === 'vhdx') {
      // qemu's vhdx driver has no block status: the generic layer calls it all data, unmapped.
      return { offset, length: end - offset, kind: 'data', depth: 0 };
    }
    if (last && end === lastEnd && offset > last.offset && offset < last.offset + last.length) {
      const skipped = offset - last.offset;
      const rest: Extent = { ...last, offset, length: last.length - skipped };
      if (rest.hostOffset !== undefined) rest.hostOffset += skipped;
      return rest;
    }
    const limit = Math.min(end, boundary(format, granule, offset));
    last = image.extent(offset, limit - offset);
    lastEnd = end;
    return last;
  };
}
