// Where a plain file has holes, for `map`. qemu asks the file system (SEEK_DATA/SEEK_HOLE), which
// Node cannot do and the guest has no path for. What the guest can know: how many bytes the file
// system allocated (st_blocks) and the bytes themselves. A file with nothing allocated is all hole;
// a fully allocated one is all data; otherwise a 4 KiB block of zeros is taken for a hole, except
// the first block, which qemu-img create always writes (so probing can find the alignment). That
// matches qemu on files written by qemu-img/qemu-io and on copies that keep holes; it differs from
// qemu where a partly sparse file also has zero blocks actually written or zero-allocated
// (qemu-io `write -z` on raw; qemu: data, here: hole), or a first block that is a hole.
// Past the end of the file is always a hole (qemu's last sector rounds the disk up).
import type { BlockDevice } from '../types.ts';

/** The file system block size qemu's SEEK_DATA answers in on ext4/xfs/tmpfs. */
const BLOCK = 4096;
/** Bytes read at a time while scanning for zero blocks. */
const CHUNK = 256 * 1024;
const ZEROS = new Uint8Array(BLOCK);

/** A run from `pos` that is all data or all hole, at most `max` bytes. */
export function fileRun(dev: BlockDevice, pos: number, max: number): { length: number; hole: boolean } {
  const allocated = dev.allocated;
  if (pos >= dev.size) return { length: max, hole: true };
  const inFile = Math.min(max, dev.size - pos);
  if (allocated === undefined || allocated >= Math.ceil(dev.size / BLOCK) * BLOCK) return { length: inFile, hole: false };
  if (allocated === 0) return { length: inFile, hole: true };
  const end = pos + inFile;
  const buf = new Uint8Array(CHUNK);
  let block = pos - (pos % BLOCK);
  let hole: boolean | undefined;
  while (block < end) {
    const n = dev.read(buf, block);
    if (n === 0) break;
    for (let at = 0; at < n && block + at < end; at += BLOCK) {
      const piece = buf.subarray(at, Math.min(n, at + BLOCK));
      const zero = block + at !== 0 && Buffer.compare(piece, ZEROS.subarray(0, piece.length)) === 0;
      if (hole === undefined) hole = zero;
      else if (zero !== hole) return { length: block + at - pos, hole };
    }
    block += n;
  }
  return { length: inFile, hole: hole ?? true };
}
