// The guest half of `convert -n` into an existing LUKS1 volume (OpenStack's way: a volume made
// beforehand, the image written into it). qemu-img takes the sources as for any target; the
// volume does not read as zeros (qemu's crypto driver has no zero-init and no write-zeroes), so
// each stretch its copy skips is written as encrypted zeros up to the disk's end, unless
// --target-is-zero says to leave them. Every write is encrypted in place with the volume's master
// key, unlocked when the target was opened; the header and the payload past the disk stay as
// they are.
import { ImageError, type Image, type ImageWriter } from '../../formats/types.ts';
import { copyToImage } from './to-image-copy.ts';

const SECTOR = 512;
/** Encrypted zeros are written this much at a time. */
const ZERO_CHUNK = 1024 * 1024;

/** qemu-img's requests, each written as it comes; the gaps between them as zeros when asked. */
class InPlaceWriter implements ImageWriter {
  readonly clusterSize = SECTOR;
  private next = 0;

  constructor(private readonly overwrite: (plain: Uint8Array, offset: number) => void, private readonly disk: number, private readonly fillGaps: boolean) {}

  private zeros(from: number, to: number): void {
    if (!this.fillGaps) return;
    for (let pos = from; pos < to; pos += ZERO_CHUNK) this.overwrite(new Uint8Array(Math.min(ZERO_CHUNK, to - pos)), pos);
  }

  write(data: Uint8Array, offset: number): void {
    if (offset < this.next) throw new ImageError(`instar's in-place copy takes requests in ascending order (a write at ${offset})`);
    this.zeros(this.next, offset);
    // qemu counts the disk in whole sectors: a request that ends the disk ends its last sector, with zeros.
    const end = offset + data.length === this.disk ? roundUp(this.disk) : offset + data.length;
    const plain = end === offset + data.length ? data : Buffer.concat([data, new Uint8Array(end - offset - data.length)]);
    this.overwrite(plain, offset);
    this.next = end;
  }

  finish(): void {
    this.zeros(this.next, roundUp(this.disk));
    this.next = roundUp(this.disk);
  }
}

const roundUp = (n: number) => Math.ceil(n / SECTOR) * SECTOR;

/** An opened image that writes guest bytes in place (a LUKS1 volume unlocked with its key). */
interface Overwritable {
  overwrite(plain: Uint8Array, offset: number): void;
}

/** The target's in-place write, when its driver has one; undefined otherwise (LUKS2 volumes too). */
export function overwriterOf(image: Image): ((plain: Uint8Array, offset: number) => void) | undefined {
  const candidate = image as Partial<Overwritable>;
  return image.format === 'luks' && typeof candidate.overwrite === 'function' ? (plain, offset) => candidate.overwrite!(plain, offset) : undefined;
}

export interface IntoLuksPlan {
  images: Image[];
  target: Image;
  overwrite: (plain: Uint8Array, offset: number) => void;
  sparseSize: number;
  targetIsZero: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** Copies the sources into the volume; qemu's counted bytes. The caller checked the volume is large enough. */
export function copyIntoLuks(plan: IntoLuksPlan): number {
  const disk = plan.images.reduce((n, i) => n + i.virtualSize, 0);
  if (roundUp(disk) > plan.target.virtualSize) throw new ImageError('output file is smaller than input file');
  const writer = new InPlaceWriter(plan.overwrite, disk, !plan.targetIsZero);
  return copyToImage({ images: plan.images, writer, sparseSize: plan.sparseSize, onProgress: plan.onProgress, unaligned: true });
}
