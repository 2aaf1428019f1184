import type { BlockDevice, Driver, Extent, Image, NodeInfo } from '../types.ts';
import { fileRun } from './holes.ts';
import { rawMeasure } from './measure.ts';
import { rawCreate } from './create.ts';
import { rawResize } from './resize.ts';

/** raw: the file is the disk (also `-f file`, the same bytes under the protocol's name). */
export class RawImage implements Image {
  constructor(
    private dev: BlockDevice,
    readonly format: 'raw' | 'file' = 'raw',
  ) {}
  /** qemu's file layer counts whole 512-byte sectors: a 1000-byte file is a 1024-byte disk. */
  get virtualSize(): number {
    return Math.ceil(this.dev.size / 512) * 512;
  }
  info(): NodeInfo {
    return { format: this.format, 'dirty-flag': false, 'virtual-size': this.virtualSize };
  }
  read(buf: Uint8Array, offset: number): void {
    const n = this.dev.read(buf, offset);
    if (n < buf.length) buf.fill(0, n);
  }
  extent(offset: number, length: number): Extent {
    // A hole in the file reads as zeros and qemu reports it so (with its offset: it is in the file).
    const run = fileRun(this.dev, offset, Math.min(length, this.virtualSize - offset));
    return { offset, length: run.length, kind: run.hole ? 'zero' : 'data', depth: 0, hostOffset: offset };
  }
}

export const rawDriver: Driver = {
  name: 'raw',
  probe: () => 1,
  open: (dev) => new RawImage(dev),
  measure: rawMeasure,
  create: rawCreate,
  resize: rawResize,
};
