// qemu's qcow2 cluster allocator (qcow2_alloc_clusters over alloc_clusters_noref): the first run
// of free clusters found by scanning forward from the free-cluster hint, which starts at 0 when
// the image is opened, moves past every cluster it looks at, and drops back when a refcount
// reaches 0. Replaying it exactly is what makes instar's writes land where qemu's would, so a
// mutated image is byte-identical to qemu's. Clusters past the end of the file count as free
// (their refcounts read as 0), as in qemu; allocating one grows the file when it is written.
import { AllocationRestart, type RefcountModel } from './refcount-update.ts';

/** Allocates clusters for `size` bytes and takes a reference on them; returns the first's offset. */
export function allocClusters(model: RefcountModel, size: number): number {
  const cs = model.clusterSize;
  const count = Math.ceil(size / cs);
  // qemu retries while counting the new clusters allocated a refcount block (-EAGAIN).
  for (;;) {
    const offset = model.findFree(count) * cs;
    try {
      model.update(offset, size, 1, false, { mayAllocate: true, discard: false });
      return offset;
    } catch (e) {
      if (!(e instanceof AllocationRestart)) throw e;
    }
  }
}

/** qcow2_free_clusters: drops one reference on the clusters of [offset, offset + size). */
export function freeClusters(model: RefcountModel, offset: number, size: number): void {
  model.update(offset, size, 1, true);
}

/** Where qcow2_alloc_bytes packs the next compressed cluster (qemu's free_byte_offset; 0: none, as at open). */
export interface BytePacker {
  freeByte: number;
}

/**
 * qcow2_alloc_bytes: `size` bytes (a compressed cluster) after the previous ones, in the same host
 * cluster or running on into the next when that is the one the allocator hands out, else in a
 * fresh cluster; every host cluster the bytes touch gains one reference. Returns their offset.
 */
export function allocBytes(model: RefcountModel, packer: BytePacker, size: number): number {
  const cs = model.clusterSize;
  let offset = packer.freeByte;
  // A cluster whose refcount is at its width's maximum takes no more.
  if (offset !== 0 && model.get(Math.floor(offset / cs)) === model.max) offset = 0;
  let free = cs - (offset % cs);
  for (;;) {
    if (offset === 0 || free < size) {
      const fresh = model.findFree(1) * cs;
      if (offset === 0 || Math.ceil(offset / cs) * cs !== fresh) {
        offset = fresh;
        free = cs;
      } else {
        free += cs;
      }
    }
    try {
      model.update(offset, size, 1, false, { mayAllocate: true, discard: false });
      break;
    } catch (e) {
      if (!(e instanceof AllocationRestart)) throw e;
      // qemu starts over in a fresh cluster after a new refcount block (-EAGAIN).
      offset = 0;
    }
  }
  packer.freeByte = (offset + size) % cs === 0 ? 0 : offset + size;
  return offset;
}
