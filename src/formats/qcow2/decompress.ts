// Compressed clusters: raw deflate (zlib type) or zstd frames, inflated to exactly one cluster,
// with qemu's rules (block/qcow2-threads.c):
//  - zlib: one inflate(Z_FINISH) into a cluster-sized buffer; success when the buffer is full,
//    whether or not the stream ends there (an over-long stream, a bomb, reads as its first
//    cluster) and whatever follows; a stream that ends or breaks before that is EIO.
//  - zstd: frames are decoded one after the other until the cluster is full; an error, input
//    that runs out, or a frame still going when the cluster is full is EIO; input after the
//    frame that fills the cluster is ignored.
import { inflateRawSync, constants as zlibConstants } from 'node:zlib';
import { ImageError } from '../types.ts';
import { decodeFrame } from './zstd.ts';
import { inflateOnce } from './zlib-once.ts';

const eio = (): ImageError => new ImageError('Input/output error', 'EIO');

// The output buffer is a little larger than the limit: a stream that fills exactly one cluster
// then ends in one inflate call, without node allocating (and inflating into) a second buffer.
const zlibOptions = (max: number) => ({ finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: max, chunkSize: max + 64 });

/** Decodes one cluster into `out` (a new buffer when not given; a given one may be left half written on failure). */
export function inflateZlib(input: Uint8Array, clusterSize: number, out: Uint8Array = Buffer.allocUnsafe(clusterSize)): Uint8Array {
  const filled = inflateOnce(input, out.subarray(0, clusterSize));
  if (filled === undefined) {
    out.set(inflateZlibEmulated(input, clusterSize));
    return out;
  }
  if (!filled) throw eio();
  return out;
}

/**
 * qemu's single inflate call emulated with node's public API (on a node without the handle
 * zlib-once.ts uses): one cluster, or EIO.
 */
export function inflateZlibEmulated(input: Uint8Array, clusterSize: number): Buffer {
  let out: Buffer;
  try {
    // maxOutputLength stops a bomb at one cluster; a truncated stream decodes what it has.
    out = inflateRawSync(input, zlibOptions(clusterSize));
  } catch {
    return firstCluster(input, clusterSize);
  }
  if (out.length < clusterSize) throw eio();
  return out;
}

/**
 * The stream did not end within one cluster (too much output, or an error somewhere): what
 * qemu's single inflate call sees is only the output up to the cluster's end. Deflate output
 * grows with the input prefix, and one more input byte adds at most ~1 KiB, so the shortest
 * prefix that yields a cluster (or fails) is found by bisection; its output decides.
 */
function firstCluster(input: Uint8Array, clusterSize: number): Buffer {
  const cap = clusterSize + 65536;
  const attempt = (length: number): Buffer | 'short' | 'error' => {
    try {
      const out = inflateRawSync(input.subarray(0, length), zlibOptions(cap));
      return out.length >= clusterSize ? out : 'short';
    } catch {
      return 'error';
    }
  };
  // Invariant: the prefix of length `hi` is not short; the one of length `lo` is (or is empty).
  let lo = 0;
  let hi = input.length;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (attempt(mid) === 'short') lo = mid;
    else hi = mid;
  }
  const out = attempt(hi);
  if (typeof out === 'string') throw eio();
  return out.subarray(0, clusterSize);
}

const ZSTD_MAGIC = 0xfd2fb528;
/** zstd's default window limit for streaming decoders (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27). */
const MAX_WINDOW = 2 ** 27;

/**
 * Length of the zstd frame (or skippable frame) at `at`, read from its headers and block
 * headers; -1 when it is malformed, needs a window over the streaming limit, or runs past the
 * input. The block contents are checked by the decoder.
 */
export function zstdFrameLength(b: Uint8Array, at: number): number {
  const u32 = (p: number) => (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;
  if (at + 4 > b.length) return -1;
  const magic = u32(at);
  if (magic >>> 4 === 0x184d2a5) {
    if (at + 8 > b.length) return -1;
    const end = at + 8 + u32(at + 4);
    return end <= b.length ? end - at : -1;
  }
  if (magic !== ZSTD_MAGIC || at + 5 > b.length) return -1;
  const fhd = b[at + 4];
  if (fhd & 0x08) return -1; // reserved bit
  const singleSegment = (fhd & 0x20) !== 0;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fhd >> 6];
  let p = at + 5;
  let window = 0;
  if (!singleSegment) {
    if (p >= b.length) return -1;
    const exponent = b[p] >> 3;
    window = 2 ** (10 + exponent) * (1 + (b[p] & 7) / 8);
    p++;
  }
  p += [0, 1, 2, 4][fhd & 3];
  if (p + fcsBytes > b.length) return -1;
  if (singleSegment) {
    // The window is the content size.
    let fcs = 0;
    for (let i = fcsBytes - 1; i >= 0; i--) fcs = fcs * 256 + b[p + i];
    window = fcsBytes === 2 ? fcs + 256 : fcs;
  }
  if (window > MAX_WINDOW) return -1;
  p += fcsBytes;
  for (;;) {
    if (p + 3 > b.length) return -1;
    const h = b[p] | (b[p + 1] << 8) | (b[p + 2] << 16);
    const type = (h >> 1) & 3;
    if (type === 3) return -1;
    p += 3 + (type === 1 ? 1 : h >>> 3);
    if (p > b.length) return -1;
    if (h & 1) break;
  }
  if (fhd & 0x04) p += 4; // content checksum
  return p <= b.length ? p - at : -1;
}

/** Decodes one cluster into `out` (a new buffer when not given; a given one may be left half written on failure). */
export function inflateZstd(input: Uint8Array, clusterSize: number, out: Uint8Array = Buffer.allocUnsafe(clusterSize)): Uint8Array {
  let filled = 0;
  let at = 0;
  while (filled < clusterSize) {
    const length = zstdFrameLength(input, at);
    if (length < 0) throw eio();
    // A frame that would overflow the cluster fails in the decoder (qemu: EIO as well).
    const n = decodeFrame(input.subarray(at, at + length), out, filled, clusterSize - filled);
    if (n < 0) throw eio();
    filled += n;
    at += length;
  }
  return out;
}
