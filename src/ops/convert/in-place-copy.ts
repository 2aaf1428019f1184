// The guest half of `convert -n` into an existing image that qemu writes through its driver's
// plain writes: a LUKS1 volume (OpenStack's way: a volume made beforehand, the image written
// into it) and the block-map formats (VDI). qemu-img takes the sources as for any target; these
// drivers neither read as zeros nor write zeros cheaply (no zero-init, no write-zeroes), so each
// stretch its copy skips is written as zeros up to the disk's end, unless --target-is-zero says
// to leave them: a LUKS volume gets them encrypted, a VDI or VHD allocates their blocks. QED has
// zero writes: it gets qemu's write-zeroes requests as the copy issues them.
import { ImageError, type Image, type ImageWriter } from '../../formats/types.ts';
import { copyToImage } from './to-image-copy.ts';
import type { Salvage } from './salvage.ts';

const SECTOR = 512;
/** Zeros are written this much at a time. */
const ZERO_CHUNK = 1024 * 1024;

/** The target's writes: guest bytes at a virtual offset, then what the format writes last. */
export interface InPlaceTarget {
  write(data: Uint8Array, offset: number): void;
  /** Formats with zero writes of their own (QED): qemu's write-zeroes requests as it issues them. */
  writeZeroes?(offset: number, length: number): void;
  finish(): void;
}

/** qemu-img's requests, each written as it comes; the gaps between them as zeros when asked. */
class GapFiller implements ImageWriter {
  readonly clusterSize = SECTOR;
  private next = 0;

  constructor(private readonly target: InPlaceTarget, private readonly disk: number, private readonly fillGaps: boolean, readonly compressedClusterSize?: number) {}

  private zeros(from: number, to: number): void {
    if (!this.fillGaps) return;
    for (let pos = from; pos < to; pos += ZERO_CHUNK) this.target.write(new Uint8Array(Math.min(ZERO_CHUNK, to - pos)), pos);
  }

  write(data: Uint8Array, offset: number): void {
    if (offset < this.next) throw new ImageError(`instar's in-place copy takes requests in ascending order (a write at ${offset})`);
    this.zeros(this.next, offset);
    // qemu counts the disk in whole sectors: a request that ends the disk ends its last sector, with zeros.
    const end = offset + data.length === this.disk ? roundUp(this.disk) : offset + data.length;
    const plain = end === offset + data.length ? data : Buffer.concat([data, new Uint8Array(end - offset - data.length)]);
    this.target.write(plain, offset);
    this.next = end;
  }

  finish(): void {
    this.zeros(this.next, roundUp(this.disk));
    this.next = roundUp(this.disk);
    this.target.finish();
  }
}

export const roundUp = (n: number): number => Math.ceil(n / SECTOR) * SECTOR;

/** An opened image that writes guest bytes in place (a LUKS1 volume unlocked with its key). */
interface Overwritable {
  overwrite(plain: Uint8Array, offset: number): void;
}

/** A LUKS1 target's in-place writes; undefined for other images (LUKS2 volumes too). */
export function luksTarget(image: Image): InPlaceTarget | undefined {
  const candidate = image as Partial<Overwritable>;
  if (image.format !== 'luks' || typeof candidate.overwrite !== 'function') return undefined;
  return { write: (plain, offset) => candidate.overwrite!(plain, offset), finish: () => undefined };
}

export interface InPlacePlan {
  images: Image[];
  target: InPlaceTarget;
  sparseSize: number;
  targetIsZero: boolean;
  onProgress?: (done: number, total: number) => void;
  /** --salvage (salvage.ts). */
  salvage?: Salvage;
  /**
   * -c into a target whose driver takes compressed writes as plain ones (a sparse VMDK): qemu's
   * copy goes a target cluster at a time then, its requests and progress steps whole clusters.
   */
  compressedClusterSize?: number;
}

/** Copies the sources into the target; qemu's counted bytes. The caller checked the target is large enough. */
export function copyInPlace(plan: InPlacePlan): number {
  const disk = plan.images.reduce((n, i) => n + i.virtualSize, 0);
  const zeroes = plan.targetIsZero ? undefined : plan.target.writeZeroes?.bind(plan.target);
  const writer = new GapFiller(plan.target, disk, !plan.targetIsZero && !zeroes, plan.compressedClusterSize);
  const compressed = plan.compressedClusterSize !== undefined;
  return copyToImage({ images: plan.images, writer, sparseSize: plan.sparseSize, compressed, onProgress: plan.onProgress, unaligned: true, onZeros: zeroes, salvage: plan.salvage });
}
