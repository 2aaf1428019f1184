// Small helpers for reading image structures. Reads past the end of the file return zeros, as
// qemu's block layer does (a short file is not an error to qemu, it is a file full of zeros).
import { ImageError, type BlockDevice } from './types.ts';

/** qemu's BDRV_MAX_LENGTH: requests reaching past it fail with EIO before any I/O. */
export const MAX_REQUEST_END = (1n << 63n) - (1n << 30n);

/** A read qemu's block layer would refuse (EIO); callers add qemu's context, see `ioContext`. */
export class IoError extends ImageError {
  constructor() {
    super('Input/output error', 'EIO');
  }
}

/** Runs `fn`, turning an IoError into qemu's "<context>: Input/output error". */
export function ioContext<T>(context: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof IoError) throw new ImageError(`${context}: ${e.message}`, e.errno);
    throw e;
  }
}

/** Whether qemu's block layer accepts a request of `length` bytes at `pos`. */
export function requestOk(pos: bigint, length: bigint): boolean {
  return pos >= 0n && pos <= MAX_REQUEST_END && length <= MAX_REQUEST_END - pos;
}

/** Reads `length` bytes at `pos`, zero-filled past EOF. Callers bound `length` beforehand. */
export function readAt(dev: BlockDevice, pos: number | bigint, length: number): Buffer {
  const start = typeof pos === 'bigint' ? pos : BigInt(pos);
  if (!requestOk(start, BigInt(length))) throw new IoError();
  const buf = Buffer.alloc(length);
  if (length === 0 || start >= BigInt(dev.size)) return buf;
  dev.read(buf, Number(start));
  return buf;
}

export const U64_MASK = (1n << 64n) - 1n;
export const INT64_MAX = (1n << 63n) - 1n;

/** A uint64 as qemu's int64 fields see it (two's complement), as a JS number. */
export function int64Number(v: bigint): number {
  return Number(BigInt.asIntN(64, v));
}

/** Narrows a value already bounded by the caller; refuses anything a double cannot hold exactly. */
export function safeNumber(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`value ${v} does not fit a safe integer`);
  }
  return Number(v);
}

/** C string semantics: the bytes up to the first NUL, decoded as UTF-8 (invalid bytes → U+FFFD). */
export function cString(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return Buffer.from(nul < 0 ? bytes : bytes.subarray(0, nul)).toString('utf8');
}

/** Rounds up to a multiple of `align` (a power of two) without shifts. */
export function roundUp(v: number, align: number): number {
  return Math.ceil(v / align) * align;
}

/**
 * `data` written at byte `offset` of a disk cut at every multiple of `unit` (a grain, a block):
 * each piece with its unit's index and its offset inside that unit, in order.
 */
export function* unitPieces(data: Uint8Array, offset: number, unit: number): Generator<{ index: number; within: number; piece: Uint8Array }> {
  for (let done = 0; done < data.length;) {
    const pos = offset + done;
    const within = pos % unit;
    const piece = data.subarray(done, done + Math.min(data.length - done, unit - within));
    done += piece.length;
    yield { index: Math.floor(pos / unit), within, piece };
  }
}
