// qemu's qcow2_detect_metadata_preallocation: an image whose refcounts claim noticeably more
// clusters than its file has allocated (preallocation=metadata, or a sparse copy) makes qemu's
// block status ask the file about every data cluster (BDRV_BLOCK_RECURSE): one that sits in a
// hole of the file then reads DATA|ZERO. Only the first answer counts; qemu asks once per open.
import type { BlockDevice } from '../types.ts';
import type { Qcow2Header } from './header.ts';
import { StoredRefcounts } from './check-refcounts.ts';

/** Most refcounts looked at (qemu looks at every cluster of the file; a hostile file can be huge). */
const MAX_LOOKUPS = 1 << 22;

export function detectMetadataPreallocation(dev: BlockDevice, h: Qcow2Header): boolean {
  const allocated = dev.allocated;
  if (allocated === undefined) return false;
  const realClusters = Math.floor(allocated / h.clusterSize);
  const threshold = Math.max(Math.floor((realClusters * 10) / 9), realClusters + 2);
  const endCluster = Math.ceil(dev.size / h.clusterSize);
  let count = 0;
  try {
    const refcounts = new StoredRefcounts(dev, h);
    let lookups = 0;
    for (let i = 0; i < endCluster && count < threshold; i++) {
      // A missing refcount block: all its clusters count 0 (qemu reads them one by one).
      if (refcounts.blockAbsent(i)) {
        i += refcounts.perBlockCount - (i % refcounts.perBlockCount) - 1;
        continue;
      }
      if (++lookups > MAX_LOOKUPS) return false;
      const r = refcounts.get(i);
      if (r !== 0 && r !== 0n) count++;
    }
  } catch {
    // qemu: an error here leaves metadata_preallocation false.
    return false;
  }
  return count >= threshold;
}
