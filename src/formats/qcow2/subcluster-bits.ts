// The subcluster bitmap of an extended L2 entry (docs/interop/qcow2.txt): bits 0-31 say which
// subclusters are allocated, bits 32-63 which read as zeros. Ranges are [first, end) in subclusters.

/** All 32 subclusters read as zeros (none allocated): qemu's QCOW_L2_BITMAP_ALL_ZEROES. */
export const ALL_ZEROES = 0xffffffffn << 32n;

/** The allocation bits of subclusters [first, end). */
function allocRange(first: number, end: number): bigint {
  return ((1n << BigInt(end)) - 1n) & ~((1n << BigInt(first)) - 1n);
}

/** After a write of subclusters [first, end): allocated, no longer zero (qemu's link_l2). */
export function subclustersWritten(bitmap: bigint, first: number, end: number): bigint {
  const alloc = allocRange(first, end);
  return (bitmap | alloc) & ~(alloc << 32n);
}

/** After a zero write of subclusters [first, end) of a cluster in part: zero, not allocated. */
export function subclustersZeroed(bitmap: bigint, first: number, end: number): bigint {
  const alloc = allocRange(first, end);
  return (bitmap | (alloc << 32n)) & ~alloc;
}

/**
 * A bitmap qemu calls corrupt (QCOW2_SUBCLUSTER_INVALID): a subcluster both allocated and zero,
 * or allocated subclusters in a cluster with no host offset.
 */
export function invalidBitmap(bitmap: bigint, hasHost: boolean): boolean {
  const alloc = bitmap & 0xffffffffn;
  return (alloc & (bitmap >> 32n)) !== 0n || (!hasHost && alloc !== 0n);
}
