// qemu's block layer keeps a node's size as an int64 count of 512-byte sectors, and a driver may
// set that count straight from an image header (parallels' nb_sectors, dmg's chunk table, vmdk's
// extents). How qemu then treats a count whose byte size does not fit int64:
//  - the check after open (bdrv_refresh_total_sectors) multiplies by 512 in unsigned 64-bit
//    arithmetic, so only a count whose *wrapped* byte size passes BDRV_MAX_LENGTH fails the open;
//  - every later size query fails instead: bdrv_getlength with EFBIG for a count past
//    INT64_MAX / 512, and both it and bdrv_nb_sectors with the count itself, negated and narrowed
//    to a C int, for a negative count. Each qemu-img command words that failure its own way, so a
//    driver opens such an image and reports the failure (Image.sizeFailure) for the ops to word.
import { ImageError, type SizeQueryFailure } from './types.ts';
import { BDRV_MAX_LENGTH } from './vpc/file-read.ts';
import { strerrorNumber } from '../strerror-number.ts';

const INT64_MAX = 2n ** 63n - 1n;
const SECTOR = 512n;
/** Linux's EFBIG, the errno bdrv_getlength fails with when the byte size passes INT64_MAX. */
const EFBIG = 27;

export interface SectorCountSize {
  /** The byte size as qemu's unsigned product wraps it (at most BDRV_MAX_LENGTH): what convert
   *  creates its target with. 0 for a negative count, whose every size query fails. */
  bytes: bigint;
  sizeFailure?: SizeQueryFailure;
}

/**
 * The size an image of `sectors` 512-byte sectors (the 64 bits as the header holds them) opens
 * with, or the open error qemu gives (thrown as ImageError, as the driver's open must). The
 * driver narrows `bytes` to a number by its own rule.
 */
export function sizeFromSectorCount(sectors: bigint): SectorCountSize {
  const count = BigInt.asIntN(64, sectors);
  const wrapped = BigInt.asUintN(64, count * SECTOR);
  if (wrapped > BDRV_MAX_LENGTH) throw new ImageError('Could not refresh total sector count: File too large');
  if (count < 0n) return { bytes: 0n, sizeFailure: { errno: Number(BigInt.asIntN(32, -count)), sectors: true } };
  if (count > INT64_MAX / SECTOR) return { bytes: wrapped, sizeFailure: { errno: EFBIG, sectors: false, sectorCount: count } };
  return { bytes: wrapped };
}

/**
 * `bytes` as an Image's virtualSize (a JS number, exact only below 2^53). A larger size opens
 * only when every size query fails: no I/O uses it then, and ops that need the exact size (convert
 * sizing its target) take it from sizeFailure.sectorCount, so it narrows to 0 rather than rounding.
 */
export function virtualSizeOf({ bytes, sizeFailure }: SectorCountSize): number {
  if (bytes <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(bytes);
  if (!sizeFailure) throw new ImageError('Image size is too large for this reader');
  return 0;
}

/** What an I/O request on an image whose size query fails ends with (qemu checks the size first). */
export function sizeFailureError(failure: SizeQueryFailure): ImageError {
  return new ImageError(strerrorNumber(failure.errno), failure.errno === EFBIG ? 'EFBIG' : undefined);
}
