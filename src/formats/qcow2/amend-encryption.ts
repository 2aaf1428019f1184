// `amend -o encrypt.*` on a qcow2 with LUKS encryption: the key slots of the LUKS header in the
// crypto extension's area (luks/key-slots.ts; the writes stay inside that area, as qemu's
// qcow2_crypto_hdr_write_func requires). qemu changes the key slots between the version upgrade
// and the other options; instar amends them only when no other option changes anything.
import type { AmendContext, AmendPlan, BlockDevice } from '../types.ts';
import type { LuksInfo } from '../luks/header.ts';
import { planKeySlotAmend } from '../luks/key-slots.ts';
import { readExtensions } from './extensions.ts';
import type { Qcow2Header } from './header.ts';

const refused = (why: string): AmendPlan => ({ refused: `instar cannot amend this qcow2 image: ${why}; nothing was written` });

/** `others`: the plan of the same amend without its encrypt.* options. */
export function planEncryptionAmend(dev: BlockDevice, h: Qcow2Header, ctx: AmendContext | undefined, others: AmendPlan): AmendPlan {
  if ('refused' in others || others.error || others.steps.length > 0 || (others.progress?.length ?? 0) > 0) {
    return refused('key-slot changes together with other changes are not implemented');
  }
  // The image opened, so its crypto extension was read and checked already.
  const crypto = readExtensions(dev, h, false, () => ({}) as LuksInfo).crypto;
  if (!ctx || !crypto) return refused('its LUKS header was not found');
  return planKeySlotAmend({ dev, base: Number(crypto.offset), areaLength: crypto.length }, 'encrypt.', ctx);
}
