// The writers of the formats qemu's drivers write into with nothing but the image file itself
// (formats/<fmt>/inplace.ts): convert -n's targets and commit's bases open them the same way.
import type { BlockDevice, Image } from '../formats/types.ts';
import type { InPlaceTarget } from './convert/in-place-copy.ts';
import { vdiInPlaceWriter } from '../formats/vdi/inplace.ts';
import { vpcInPlaceWriter } from '../formats/vpc/inplace.ts';
import { qedInPlaceWriter } from '../formats/qed/inplace.ts';
import { qcowInPlaceWriter } from '../formats/qcow/inplace.ts';
import { vhdxInPlaceWriter, type VhdxGuidSource } from '../formats/vhdx/inplace.ts';
import { VhdxImage } from '../formats/vhdx/driver.ts';

/**
 * The in-place writer of `image` (opened on `dev`), instar's refusal (worded for convert -n), or
 * undefined for a format that needs more than its file (parallels, vmdk, luks) or has none here.
 */
export function plainInPlaceWriter(image: Image, dev: BlockDevice, vhdxGuids?: VhdxGuidSource): InPlaceTarget | { refused: string } | undefined {
  switch (image.format) {
    case 'vdi':
      return vdiInPlaceWriter(dev);
    case 'vpc':
      return vpcInPlaceWriter(dev, image.virtualSize);
    case 'qed':
      return qedInPlaceWriter(dev);
    case 'qcow':
      return qcowInPlaceWriter(dev);
    case 'vhdx':
      return image instanceof VhdxImage ? vhdxInPlaceWriter(dev, image, vhdxGuids) : { refused: 'instar cannot convert into this vhdx image; nothing was written' };
    default:
      return undefined;
  }
}
