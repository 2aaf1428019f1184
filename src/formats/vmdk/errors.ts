// Errors the VMDK driver throws beyond plain ImageError.
import { ImageError } from '../types.ts';

export type NeededFileRole = 'extent' | 'backing';

/**
 * The image names files the driver was not given. The host answers by resolving each name
 * (relative to the image's directory, then its path policy), opening the allowed ones and
 * retrying with them in OpenContext.devices keyed by `name` exactly as listed here.
 */
export class NeedFilesError extends ImageError {
  /** `format` 'raw': a flat extent (qemu opens it as a plain data file, and locks it so). */
  constructor(readonly files: { role: NeededFileRole; name: string; format?: 'raw' }[]) {
    super(`VMDK image needs ${files.length} more file(s): ${files.map((f) => JSON.stringify(f.name)).join(', ')}`);
    this.name = 'NeedFilesError';
  }
}

/**
 * qemu failed with a bare errno and no message of its own: qemu-img then prints the open prefix
 * twice, "Could not open 'X': Could not open 'X': Invalid argument". The driver adds the inner
 * prefix when the open context has the image's display name (`prefixed`); otherwise `message` is
 * the bare strerror text and the caller, who knows X, adds it.
 */
export class BareErrnoError extends ImageError {
  constructor(message: string, errno: string, readonly prefixed = false) {
    super(message, errno);
    this.name = 'BareErrnoError';
  }
}

export const einval = (): BareErrnoError => new BareErrnoError('Invalid argument', 'EINVAL');

/** A failed guest read, as qemu-img reports it ("error while reading at byte N: <strerror>"). */
export const readError = (errno: 'EIO' | 'EINVAL'): ImageError =>
  new ImageError(errno === 'EIO' ? 'Input/output error' : 'Invalid argument', errno);
