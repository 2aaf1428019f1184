// `amend` for the luks format: key slots only (qemu's block_crypto_amend_options_luks over
// key-slots.ts). LUKS2 volumes, which instar reads and qemu cannot open, are not amended.
import type { AmendCapability } from '../types.ts';
import { readAt } from '../bytes.ts';
import { AMEND_OPTIONS } from '../amend-options.ts';
import { isLuks2 } from './luks2-header.ts';
import { LUKS_HEADER_SIZE } from './header.ts';
import { planKeySlotAmend } from './key-slots.ts';

export const luksAmend: AmendCapability = {
  options: AMEND_OPTIONS.luks.amend,
  plan(dev, _image, _values, ctx) {
    // Without a context (the open alone, as for -o help) there is nothing to write.
    if (!ctx) return { steps: [] };
    if (isLuks2(readAt(dev, 0, LUKS_HEADER_SIZE))) return { refused: 'instar cannot amend LUKS2 volumes (qemu-img cannot open them); nothing was written' };
    return planKeySlotAmend({ dev, base: 0 }, '', ctx);
  },
};
