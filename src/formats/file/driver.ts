// `-f file` / `-O file`: qemu's file protocol named as the format, with no format layer above it.
// The content is raw's (the file is the disk, its length rounded up to a sector); what differs is
// the name qemu prints and the create options it lists (the protocol's own). Never probed: qemu
// picks it only when named.
import type { Driver } from '../types.ts';
import { RawImage, rawDriver } from '../raw/driver.ts';
import { fileCreate } from './create.ts';

/** raw, or the file protocol named as the format: the file itself is the disk. */
export const isRawFile = (format: string): boolean => format === 'raw' || format === 'file';

export const fileDriver: Driver = {
  name: 'file',
  probe: () => 0,
  open: (dev) => new RawImage(dev, 'file'),
  create: fileCreate,
  resize: rawDriver.resize,
};
