// LUKS resize (qemu's block_crypto_co_truncate): the file below is resized as raw, to the new
// disk size plus the payload offset; the header is untouched.
import { rawResize } from '../raw/resize.ts';
import type { ResizeCapability, ResizePlan } from '../types.ts';

export const luksResize: ResizeCapability = {
  plan(image, dev, request): ResizePlan {
    const payload = image.info()['format-specific']?.data['payload-offset'];
    if (typeof payload !== 'number' || !Number.isSafeInteger(payload) || payload < 0) {
      return { error: 'instar cannot resize this LUKS image (no payload offset); nothing was written' };
    }
    const fileSize = request.newSize + payload;
    if (!Number.isSafeInteger(fileSize)) return { error: 'The new size is too large' };
    return rawResize.plan(image, dev, { ...request, newSize: fileSize });
  },
};
