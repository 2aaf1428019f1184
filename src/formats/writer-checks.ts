// The two checks every block-map writer makes before it touches the output: the device is
// writable, and a request lies inside the disk (a caller's bug or a hostile request is refused
// whole, before anything is written).
import { ImageError, type BlockDevice } from './types.ts';

/** The device's write, or a one-line refusal when the host opened it read-only. */
export function writableOutput(dev: BlockDevice): (buf: Uint8Array, pos: number) => void {
  if (!dev.write) throw new ImageError('the output was not opened for writing');
  return dev.write.bind(dev);
}

/** Refuses a write outside the disk: nothing is written. */
export function checkWriteRange(data: Uint8Array, offset: number, size: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > size - data.length) {
    throw new ImageError(`instar refuses a write of ${data.length} bytes at offset ${offset} outside the ${size}-byte disk`);
  }
}

/**
 * A write the format's driver fails as qemu's does, with its errno's words (`offset`: the guest
 * byte where it failed): the op reports it as qemu's caller does, after the writes before it.
 */
export class DriverWriteFailure extends ImageError {
  constructor(message: string, errno: string, readonly offset: number) {
    super(message, errno);
  }
}
