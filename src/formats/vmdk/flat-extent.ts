// A flat extent: a run of the guest disk stored as is in a file, from a start offset.
import type { BlockDevice } from '../types.ts';
import { readError } from './errors.ts';
import { outOfRange, readZeroPadded } from './io.ts';

export class FlatExtent {
  readonly flat = true;
  readonly compressed = false;
  constructor(
    readonly dev: BlockDevice,
    readonly sectors: bigint,
    /** Byte offset of the extent's first sector in the file (signed: qemu's shift can wrap). */
    readonly start: bigint,
  ) {}

  /** Where extent-relative `offset` lives in the file; past end of file reads as zeros. */
  hostOffset(offset: number): bigint {
    return this.start + BigInt(offset);
  }

  read(out: Uint8Array, offset: number): void {
    const pos = this.hostOffset(offset);
    if (outOfRange(pos, out.length)) throw readError('EIO');
    readZeroPadded(this.dev, out, pos);
  }
}
