// ISO 9660 and UDF images (CD/DVD images): qemu has no such format and reads them as raw. instar
// recognises them (detect.ts) so that, in default mode, a known and harmless kind of file is read
// as raw without enabling the raw fallback for unknown content; it is then named "iso" in what
// instar prints. With --unsafe-quirks, detection says "raw" as qemu-img does.
import type { BlockDevice, Driver, Extent, Image, NodeInfo, OpenContext } from '../types.ts';
import { readAt } from '../bytes.ts';
import { rawDriver } from '../raw/driver.ts';

/** Volume descriptors start at sector 16 (byte 0x8000); the identifier follows the type byte. */
const DESCRIPTORS_AT = 0x8000;
const DESCRIPTOR_SIZE = 2048;
/** ISO 9660 primary/supplementary descriptors, and UDF's volume recognition sequence. */
const IDENTIFIERS = new Set(['CD001', 'BEA01', 'NSR02', 'NSR03']);
/** The recognition sequence may start with other descriptors (e.g. CD001 then BEA01); look at a few. */
const DESCRIPTORS_CHECKED = 16;

/** Whether the file carries an ISO 9660 or UDF volume recognition sequence. */
export function isIsoImage(dev: BlockDevice): boolean {
  for (let i = 0; i < DESCRIPTORS_CHECKED; i++) {
    const at = DESCRIPTORS_AT + i * DESCRIPTOR_SIZE;
    if (at + 6 > dev.size) return false;
    const id = readAt(dev, at + 1, 5).toString('latin1');
    if (IDENTIFIERS.has(id)) return true;
    // Any other identifier ends the sequence (a zeroed sector, or not a volume descriptor at all).
    if (!['BOOT2', 'CDW02', 'TEA01'].includes(id)) return false;
  }
  return false;
}

/** Raw reads under the name "iso". */
class IsoImage implements Image {
  readonly format = 'iso';
  constructor(private readonly raw: Image) {}
  get virtualSize(): number {
    return this.raw.virtualSize;
  }
  info(): NodeInfo {
    return { ...this.raw.info(), format: 'iso' };
  }
  read(buf: Uint8Array, offset: number): void {
    this.raw.read(buf, offset);
  }
  extent(offset: number, length: number): Extent {
    return this.raw.extent(offset, length);
  }
}

export const isoDriver: Driver = {
  name: 'iso',
  // The descriptors lie past the 2048 bytes every probe sees: detect.ts calls isIsoImage.
  probe: () => 0,
  open: (dev: BlockDevice, ctx: OpenContext) => new IsoImage(rawDriver.open(dev, ctx)),
};
