// `amend -o encrypt.*` on a qcow2 with LUKS encryption: the key slots of the LUKS header in the
// crypto extension's area (luks/key-slots.ts; the writes stay inside that area, as qemu's
// qcow2_crypto_hdr_write_func requires). qemu changes the key slots after the version upgrade
// and before the other options (amend.ts keeps that order).
import type { AmendContext, AmendPlan, BlockDevice } from '../types.ts';
import type { LuksInfo } from '../luks/header.ts';
import { planKeySlotAmend } from '../luks/key-slots.ts';
import { readExtensions } from './extensions.ts';
import type { Qcow2Header } from './header.ts';

export function planEncryptionAmend(dev: BlockDevice, h: Qcow2Header, ctx: AmendContext | undefined): AmendPlan {
  // The image opened, so its crypto extension was read and checked already.
  const crypto = readExtensions(dev, h, false, () => ({}) as LuksInfo).crypto;
  if (!ctx || !crypto) return { refused: 'instar cannot amend this qcow2 image: its LUKS header was not found; nothing was written' };
  return planKeySlotAmend({ dev, base: Number(crypto.offset), areaLength: crypto.length }, 'encrypt.', ctx);
}
