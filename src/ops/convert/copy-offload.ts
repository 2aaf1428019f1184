// convert -C (copy offloading): qemu copies each block-status data run with copy_range instead
// of reading it, so nothing inside a data run is found to be zeros and skipped (runs of zeros per
// block status are still skipped on a zero-initialized target). Only where its drivers implement
// copy_range: raw (and `file`) sources, qcow2 sources (not encrypted, no compressed cluster) over
// backing files that are such sources too, into raw or unencrypted qcow2 targets. Elsewhere the
// first copy_range fails and qemu reads and writes as without -C.
// Not modelled: a source whose copy_range fails part-way (a compressed cluster after plain ones,
// a backing file of another format): qemu offloads up to that chunk; instar copies all without.
import type { Image } from '../../formats/types.ts';
import { isRawFile } from '../../formats/file/driver.ts';

/** Whether qemu's copy_range serves every source (the target's side is the caller's). */
export function offloadsFrom(images: readonly Image[]): boolean {
  return images.every((image) => isRawFile(image.format) || plainQcow2(image));
}

function plainQcow2(image: Image): boolean {
  if (image.format !== 'qcow2') return false;
  const info = image.info();
  if (info.encrypted === true) return false;
  if (info['backing-filename'] !== undefined && !(image.backingImage && offloadsFrom([image.backingImage]))) return false;
  for (let pos = 0; pos < image.virtualSize; ) {
    const e = image.extent(pos, image.virtualSize - pos);
    if (e.compressed || e.length <= 0) return false;
    pos += e.length;
  }
  return true;
}
