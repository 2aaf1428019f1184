// Where a plain file has holes, for `map`. qemu asks the file system (SEEK_DATA/SEEK_HOLE), which
// Node cannot do and the guest has no path for. What the guest can know: how many bytes the file
// system allocated (st_blocks) and the bytes themselves. A file with nothing allocated is all hole;
// a fully allocated one is all data; otherwise a 4 KiB block of zeros is taken for a hole. That
// matches qemu on files written by qemu-img/qemu-io and on copies that keep holes; it differs from
// qemu where a partly sparse file also has zero blocks actually written (qemu: data; here: hole).
import type { BlockDevice } from '../types.ts';

/** The file system block size qemu's SEEK_DATA answers in on ext4/xfs/tmpfs. */
const BLOCK = 4096;
/** Bytes read at a time while scanning for zero blocks. */
const CHUNK = 256 * 1024;
const ZEROS = new Uint8Array(BLOCK);

/** A run from `pos` that is all data or all hole, at most `max` bytes. */
export function fileRun(dev: BlockDevice, pos: number, max: number): { length: number; hole: boolean } {
  const allocated = dev.allocated;
  if (allocated === undefined || allocated >= Math.ceil(dev.size / BLOCK) * BLOCK) return { length: max, hole: false };
  if (allocated === 0 || pos >= dev.size) return { length: max, hole: true };
  const end = pos + max;
  const buf = new Uint8Array(CHUNK);
  let block = pos - (pos % BLOCK);
  let hole: boolean | undefined;
  while (block < end && block < dev.size) {
    const n = dev.read(buf, block);
    if (n === 0) break;
    for (let at = 0; at < n && block + at < end; at += BLOCK) {
      const piece = buf.subarray(at, Math.min(n, at + BLOCK));
      const zero = Buffer.compare(piece, ZEROS.subarray(0, piece.length)) === 0;
      if (hole === undefined) hole = zero;
      else if (zero !== hole) return { length: block + at - pos, hole };
    }
    block += n;
  }
  // Past end of file the last block's status goes on, as qemu's last extent runs to the end.
  return { length: max, hole: hole ?? true };
}
