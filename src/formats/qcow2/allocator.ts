// qemu's qcow2 cluster allocator (qcow2_alloc_clusters over alloc_clusters_noref): the first run
// of free clusters found by scanning forward from the free-cluster hint, which starts at 0 when
// the image is opened, moves past every cluster it looks at, and drops back when a refcount
// reaches 0. Replaying it exactly is what makes instar's writes land where qemu's would, so a
// mutated image is byte-identical to qemu's. Clusters past the end of the file count as free
// (their refcounts read as 0), as in qemu; allocating one grows the file when it is written.
import { PlanRefusal, type RefcountModel } from './refcount-update.ts';

/** Offsets qemu allows for clusters (QCOW_MAX_CLUSTER_OFFSET is 2^56 - 1); instar stays below 2^53. */
const MAX_CLUSTER_END = Number.MAX_SAFE_INTEGER;

/** Allocates clusters for `size` bytes and takes a reference on them; returns the first's offset. */
export function allocClusters(model: RefcountModel, size: number): number {
  const cs = model.clusterSize;
  const count = Math.ceil(size / cs);
  // nb_clusters free in a row, each checked once: the hint never moves back during the scan.
  let run = 0;
  while (run < count) {
    const cluster = model.freeClusterIndex++;
    if ((cluster + 1) * cs > MAX_CLUSTER_END) throw new PlanRefusal('no free cluster below 2^53 bytes; nothing was written');
    run = model.get(cluster) === 0 ? run + 1 : 0;
  }
  const offset = (model.freeClusterIndex - count) * cs;
  model.update(offset, size, 1, false);
  return offset;
}

/** qcow2_free_clusters: drops one reference on the clusters of [offset, offset + size). */
export function freeClusters(model: RefcountModel, offset: number, size: number): void {
  model.update(offset, size, 1, true);
}
