import type { BlockDevice, Driver, Extent, Image, NodeInfo } from '../types.ts';

/** raw: the file is the disk. */
class RawImage implements Image {
  readonly format = 'raw';
  constructor(private dev: BlockDevice) {}
  get virtualSize(): number {
    return this.dev.size;
  }
  info(): NodeInfo {
    return { format: 'raw', 'dirty-flag': false, 'virtual-size': this.dev.size };
  }
  read(buf: Uint8Array, offset: number): void {
    const n = this.dev.read(buf, offset);
    if (n < buf.length) buf.fill(0, n);
  }
  extent(offset: number, length: number): Extent {
    return { offset, length: Math.min(length, this.dev.size - offset), kind: 'data', depth: 0, hostOffset: offset };
  }
}

export const rawDriver: Driver = {
  name: 'raw',
  probe: () => 1,
  open: (dev) => new RawImage(dev),
};
