// Words of qemu's that a commit result carries from the guest to the host, which checks them.

/** qemu's vmdk driver refuses to write a grain a streamOptimized extent already holds. */
export const STREAM_OPTIMIZED_REWRITE = 'Could not write to allocated cluster for streamOptimized';
