// Which parts of a guest write qemu-img convert hands to the driver: its zero detection
// (is_allocated_sectors_min with the default -S 4k) skips 4 KiB blocks, aligned to the disk,
// that read as zeros. Writers into files the create step left as holes write the same parts,
// so that the output's holes, and with them `info`'s disk size, are qemu's. VMDK's flat
// extents use it too.

/** qemu-img convert's default minimum sparse run (-S 4k), also its zero-detection alignment. */
export const SPARSE_BLOCK = 4096;
const ZEROS = new Uint8Array(SPARSE_BLOCK);

/** [start, end) runs of `data` (at virtual `offset`) holding a non-zero byte, in 4 KiB blocks aligned to the disk. */
export function nonZeroRuns(data: Uint8Array, offset: number): [number, number][] {
  const runs: [number, number][] = [];
  let pos = 0;
  while (pos < data.length) {
    const end = Math.min(data.length, (Math.floor((offset + pos) / SPARSE_BLOCK) + 1) * SPARSE_BLOCK - offset);
    // A non-zero first or last byte settles most data blocks without the compare.
    const zero = data[pos] === 0 && data[end - 1] === 0 && Buffer.compare(data.subarray(pos, end), ZEROS.subarray(0, end - pos)) === 0;
    if (!zero) {
      const last = runs[runs.length - 1];
      if (last && last[1] === pos) last[1] = end;
      else runs.push([pos, end]);
    }
    pos = end;
  }
  return runs;
}
