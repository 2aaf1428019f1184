// qemu's file driver, when it grows an empty file (the target convert has just created), writes
// zeros over the file's first block so that its later O_DIRECT alignment probing reads allocated
// blocks (file-posix.c, "allocate first block"). The target then has that block allocated even
// where the disk is all zeros; instar does the same so its output's layout matches qemu's.

/** qemu's MAX_BLOCKSIZE and BDRV_SECTOR_SIZE. */
const MAX_BLOCK = 4096;
const SECTOR = 512;

/** Bytes of zeros qemu writes at offset 0 after growing an empty file to `size` (0: none). */
export function firstBlockBytes(size: number): number {
  if (!(size > 0)) return 0;
  // A file smaller than a block gets one sector; never write past the size asked for.
  return Math.min(size, size < MAX_BLOCK ? SECTOR : MAX_BLOCK);
}

/** Writes those zeros with `write(buf, position)`; like qemu, a failure is ignored. */
export function allocateFirstBlock(size: number, write: (buf: Buffer, position: number) => void): void {
  const n = firstBlockBytes(size);
  if (n === 0) return;
  try {
    write(Buffer.alloc(n), 0);
  } catch {
    // Only an optimisation in qemu: the copy goes on without it.
  }
}
