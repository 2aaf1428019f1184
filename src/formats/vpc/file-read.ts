// How qemu's block layer reads a format driver's underlying file, shared by the vpc and vhdx
// drivers: requests beyond BDRV_MAX_LENGTH fail with EIO, bytes past the end of the file read as
// zeros. Offsets come from image fields, so they arrive as BigInt and are narrowed only here.
import { strerror } from '../../strerror.ts';
import { ImageError, type BlockDevice } from '../types.ts';

/** qemu's BDRV_REQUEST_MAX_BYTES (INT_MAX rounded down to sectors). */
const REQUEST_MAX_BYTES = 0x7fff_fe00n;
/** qemu's BDRV_MAX_LENGTH: INT64_MAX aligned down to 1 GiB (BDRV_MAX_ALIGNMENT) since qemu 6.0. */
export const BDRV_MAX_LENGTH = 2n ** 63n - 2n ** 30n;

/**
 * A failure for which qemu's driver returns only an errno: the bare strerror text. When it ends
 * an open, openingAs() words it as qemu's block layer does.
 */
export function errnoError(code: 'EINVAL' | 'EFBIG' | 'ENOTSUP' | 'EIO' | 'EPERM' | 'ENOMEM'): ImageError {
  return new ImageError(strerror(code), code);
}

/**
 * Runs a driver's open. qemu's block layer words an errno-only open failure
 * "Could not open '<file>': <strerror>" (so qemu-img prints that prefix twice). Lines that qemu
 * prints with error_report before failing travel in the error's `reports` property.
 */
export function openingAs<T>(displayName: string | undefined, open: () => T): T {
  try {
    return open();
  } catch (e) {
    if (!(e instanceof ImageError) || !e.errno) throw e;
    const wrapped = new ImageError(`Could not open '${displayName ?? ''}': ${e.message}`, e.errno);
    const reports = (e as ImageError & { reports?: string[] }).reports;
    if (reports) Object.assign(wrapped, { reports });
    throw wrapped;
  }
}

/** Whether qemu's block layer would refuse a read of `length` bytes at `offset` (as uint64). */
export function beyondMaxLength(offset: bigint, length: number): boolean {
  // One request carries at most REQUEST_MAX_BYTES (bdrv_check_request32).
  if (BigInt(length) > REQUEST_MAX_BYTES) return true;
  return offset > BDRV_MAX_LENGTH || BigInt(length) > BDRV_MAX_LENGTH - offset;
}

/**
 * Reads `length` bytes at `offset` as qemu's bdrv_pread would; past EOF reads zeros.
 * `onRefused` is the error qemu reports when the block layer refuses the request.
 */
export function preadQemu(dev: BlockDevice, offset: bigint, length: number, onRefused: () => ImageError): Uint8Array {
  if (beyondMaxLength(offset, length)) throw onRefused();
  const buf = new Uint8Array(length);
  if (offset < BigInt(dev.size)) readZeroFilled(dev, buf, Number(offset));
  return buf;
}

/** Fills `buf` from `pos`, zeros past the end of the device (the hot path: one call, no loops). */
export function readZeroFilled(dev: BlockDevice, buf: Uint8Array, pos: number): void {
  const n = pos < dev.size ? dev.read(buf, pos) : 0;
  if (n < buf.length) buf.fill(0, n);
}

/** qemu's bdrv_getlength of a plain file: its size rounded up to whole 512-byte sectors. */
export function qemuFileLength(dev: BlockDevice): number {
  return Math.ceil(dev.size / 512) * 512;
}
