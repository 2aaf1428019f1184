// Writes guest data into a Parallels image that create has just laid out, as qemu's parallels
// driver does under qemu-img convert: a block-map image (block-map-writer.ts) whose BAT entries
// are cluster numbers in the file, the first new one right after data_off. qemu preallocates the
// file ahead with zeros and cuts it back to the last allocated cluster at close, so every
// allocated cluster is in the file whole. The BAT runs from byte 64 of the header sector up to
// data_off; the header is left as create wrote it (qemu marks it in use while writing and clears
// the mark at close).
import { BlockMapWriter } from '../block-map-writer.ts';
import { ImageError, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';

const SECTOR = 512;
const BAT_OFFSET = 64;

/** What the writer needs of create's plan (src/formats/parallels/create.ts). */
interface ParallelsPlanView {
  size: number;
  clusterSize: number;
}

export const parallelsWriter: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const plan = raw as unknown as ParallelsPlanView;
    const cs = plan.clusterSize;
    if (!Number.isSafeInteger(plan.size) || !Number.isSafeInteger(cs) || cs < SECTOR) {
      throw new ImageError('instar cannot write a Parallels image of this geometry');
    }
    const entries = Math.ceil(plan.size / cs);
    // create's data_off: the header and BAT rounded up to whole clusters.
    const dataOff = Math.ceil((BAT_OFFSET + 4 * entries) / cs) * cs;
    return new BlockMapWriter(files.image, {
      format: 'Parallels',
      diskSize: plan.size,
      blockSize: cs,
      mapOffset: BAT_OFFSET,
      map: Buffer.alloc(dataOff - BAT_OFFSET),
      unallocated: 0,
      firstEntry: dataOff / cs,
      dataBase: 0,
    });
  },
};
