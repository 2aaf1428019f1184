// The raw target as qemu-img convert makes it in its second round (an existing target, -n, a
// disk past 2^53 bytes): created (O_CREAT|O_TRUNC) with the disk's size, first block allocated.
// Sizes are exact bigints: qemu sizes the target with its int64 sector total times 512, which a
// 16 PiB qcow2 or sources whose wrapped sizes add up past 2^63 make too large or negative, and
// qemu's words for those depend on the value.
import { closeSync, constants, fstatSync, ftruncateSync, writeSync } from 'node:fs';
import { allocateFirstBlock } from '../../formats/raw/first-block.ts';
import { LockConflict, lockCreatedTarget, openCreating } from '../image-locks.ts';
import { strerror } from '../../strerror.ts';
import { ConvertError, ConvertErrorText } from './errors.ts';
import { resizeFailed } from './open-copy.ts';

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** qemu's QemuOpts refusal of a negative 'size' (its int64 byte total wrapped), per version. */
function sizeOptionRefused(path: string, bytes: bigint, newWording: boolean, format: string): ConvertError {
  const prefix = `${path}: error while converting ${format}: `;
  if (newWording) return new ConvertError(`${prefix}Value '${bytes}' is out of range for parameter 'size'`);
  return new ConvertErrorText(`${prefix}Parameter 'size' expects a non-negative number below 2^64\n` +
    'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.');
}

/**
 * ftruncate to a size past what a JS number holds exactly. Node takes only safe integers; a file
 * system refuses a length past its own limit with EFBIG whatever the length, so a refusal of
 * 2^53 - 1 is the refusal of the larger size (ext4's limit is 16 TiB). One that takes it leaves
 * the file at 2^53 - 1 bytes, of holes, and the caller refuses the copy (instar's offsets are numbers).
 */
function truncateLarge(fd: number, size: bigint): void {
  if (size <= SAFE) ftruncateSync(fd, Number(size));
  else ftruncateSync(fd, Number.MAX_SAFE_INTEGER);
}

/**
 * Creates the target for a disk of `total` bytes (the sum of the sources' sizes); qemu's wording
 * for each failure. `newWording`: qemu 10.0's message for a negative size.
 */
export function createTarget(path: string, total: bigint, newWording: boolean, format = 'raw'): number {
  const bytes = BigInt.asIntN(64, total);
  // qemu refuses the option before it creates anything.
  if (bytes < 0n) throw sizeOptionRefused(path, bytes, newWording, format);
  let fd: number | undefined;
  try {
    fd = openCreating(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOCTTY);
    truncateLarge(fd, bytes);
    if (bytes <= SAFE) allocateFirstBlock(Number(bytes), (buf, at) => void writeSync(fd!, buf, 0, buf.length, at));
    lockCreatedTarget(fd, path);
    return fd;
  } catch (e) {
    // Another process has the file open (qemu's lock bytes): refused before anything is truncated.
    if (e instanceof LockConflict) throw new ConvertErrorText(`${path}: error while converting ${format}: ${e.message}`);
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    if (fd !== undefined) closeSync(fd);
    // The file exists then, and qemu leaves it (empty): a size the file system refuses (EFBIG).
    if (fd !== undefined && (e as NodeJS.ErrnoException).syscall === 'ftruncate') throw new ConvertError(resizeFailed(path, code, format));
    throw new ConvertError(`${path}: error while converting ${format}: Could not create '${path}': ${strerror(code)}`);
  }
}

/**
 * -n: whether the target is smaller than the disk. qemu compares sector counts, its target's
 * rounded up: a file a few bytes short of the disk's last sector still takes it (the copy's writes
 * then extend it, its holes do not).
 */
export function targetTooSmall(fd: number, total: bigint): boolean {
  const size = fstatSync(fd, { bigint: true }).size;
  // Not wrapped: qemu's total here is in sectors, positive (a negative one skips this check).
  return ((size + 511n) / 512n) * 512n < total;
}
