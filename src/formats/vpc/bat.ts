// The block allocation table of a dynamic VHD: one big-endian 32-bit sector number per block
// (0xffffffff = not allocated). qemu reads it whole and refuses an image whose blocks or table
// reach past the end of the file; we stream it so that memory stays bounded by the file size.
import { ImageError, type BlockDevice } from '../types.ts';
import { beyondMaxLength, qemuFileLength } from './file-read.ts';
import type { DynamicHeader } from './dynamic-header.ts';

export const UNALLOCATED = 0xffff_ffff;
const CHUNK = 1024 * 1024;

const truncated = () =>
  new ImageError('block-vpc: free_data_block_offset points after the end of file. The image has been truncated.');

/** Loads the entries for the first `needed` blocks, after qemu's whole-table checks. */
export function loadBat(dev: BlockDevice, hdr: DynamicHeader, needed: number): Uint32Array {
  const tableBytes = hdr.maxTableEntries * 4;
  if (beyondMaxLength(hdr.tableOffset, tableBytes)) throw new ImageError('Error reading pagetable');
  const fileLength = qemuFileLength(dev);
  // The first free offset is at least the end of the table, so a table past EOF fails here.
  const tableEnd = hdr.tableOffset + BigInt(tableBytes);
  if (((tableEnd + 511n) / 512n) * 512n > BigInt(fileLength)) throw truncated();

  const start = Number(hdr.tableOffset);
  const bat = allocate(Math.min(needed, hdr.maxTableEntries));
  const chunk = new Uint8Array(Math.min(CHUNK, Math.max(tableBytes, 4)));
  const view = new DataView(chunk.buffer);
  const blockSpan = hdr.bitmapSize + hdr.blockSize;
  let lastSector = -1;
  for (let done = 0; done < tableBytes; done += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, tableBytes - done));
    const n = dev.read(part, start + done);
    if (n < part.length) part.fill(0, n);
    const first = done / 4;
    for (let i = 0; i < part.length / 4; i++) {
      const entry = view.getUint32(i * 4);
      if (first + i < bat.length) bat[first + i] = entry;
      if (entry !== UNALLOCATED && entry > lastSector) lastSector = entry;
    }
  }
  if (lastSector >= 0 && lastSector * 512 + blockSpan > fileLength) throw truncated();
  return bat;
}

/** qemu allocates the table with qemu_try_blockalign and reports a failure in its own words. */
function allocate(entries: number): Uint32Array {
  try {
    return new Uint32Array(entries);
  } catch {
    throw new ImageError('Unable to allocate memory for page table');
  }
}
