// Writes into the payload of an unlocked LUKS2 volume (convert -n). qemu-img cannot open LUKS2 at
// all; instar reads it (docs/luks2.md) and writes it the way it reads it: whole sectors of the
// segment's size, encrypted with the volume key, IVs counting 512-byte units from iv_tweak (as
// cryptsetup and dm-crypt do for LUKS2). A request that covers a sector in part is merged with
// the sector's decrypted contents first. The header and key slots are never written.
import { createCipheriv } from 'node:crypto';
import { ImageError, type Image } from '../types.ts';
import { checkWriteRange } from '../writer-checks.ts';
import { SECTOR, SectorEncryptor } from './encrypt.ts';
import type { Luks2Image, Luks2Payload } from './luks2-image.ts';

export interface PayloadTarget {
  write(plain: Uint8Array, offset: number): void;
  finish(): void;
}

/** Encrypts whole sectors in place; `sector` is the payload sector number of the first one. */
type SectorsEncryptor = (buf: Uint8Array, sector: number) => void;

function encryptor(p: Luks2Payload): SectorsEncryptor | string {
  const { spec, key, sectorSize, firstIv, ivPerSector } = p;
  if (sectorSize === SECTOR) {
    const e = new SectorEncryptor(spec, key);
    return (buf, sector) => e.encrypt(buf, firstIv + sector);
  }
  // Larger sectors: one cipher unit each, for the ciphers node:crypto runs natively.
  const native = (spec.mode === 'xts' && /^aes-(128|256)$/.test(spec.alg)) || (spec.mode === 'cbc' && /^aes-(128|192|256)$/.test(spec.alg));
  if (!native || (spec.ivgen !== 'plain64' && spec.ivgen !== 'plain')) return `${spec.alg}-${spec.mode}-${spec.ivgen} in ${sectorSize}-byte sectors`;
  return (buf, sector) => {
    for (let s = 0; s < buf.length / sectorSize; s++) {
      const iv = Buffer.alloc(16);
      const number = firstIv + (sector + s) * ivPerSector;
      iv.writeUInt32LE(number % 2 ** 32, 0);
      if (spec.ivgen === 'plain64') iv.writeUInt32LE(Math.floor(number / 2 ** 32), 4);
      const c = createCipheriv(`${spec.alg}-${spec.mode}`, key, iv);
      c.setAutoPadding(false);
      const unit = buf.subarray(s * sectorSize, (s + 1) * sectorSize);
      unit.set(c.update(unit));
    }
  };
}

/** The payload writer of an opened LUKS2 volume, or why instar does not write into it. */
export function luks2InPlaceTarget(image: Image, dev: { write?: (buf: Uint8Array, pos: number) => void }): PayloadTarget | { refused: string } | undefined {
  const candidate = image as Partial<Luks2Image>;
  if (image.format !== 'luks' || typeof candidate.payloadLayout !== 'function') return undefined;
  const refused = (why: string) => ({ refused: `instar cannot convert into this LUKS2 volume (${why}); nothing was written` });
  const layout = candidate.payloadLayout();
  if (!layout) return refused('it is not unlocked');
  if (!dev.write) throw new ImageError('the output was not opened for writing');
  const encrypt = encryptor(layout);
  if (typeof encrypt === 'string') return refused(`instar does not encrypt ${encrypt} yet`);
  const put = dev.write.bind(dev);
  const size = layout.sectorSize;
  return {
    write(plain, offset) {
      checkWriteRange(plain, offset, layout.virtualSize);
      const start = Math.floor(offset / size) * size;
      const end = Math.ceil((offset + plain.length) / size) * size;
      const sectors = new Uint8Array(end - start);
      if (start !== offset || end !== offset + plain.length) image.read(sectors, start);
      sectors.set(plain, offset - start);
      encrypt(sectors, start / size);
      put(sectors, layout.offset + start);
    },
    finish: () => undefined,
  };
}
