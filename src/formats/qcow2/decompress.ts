// Compressed clusters: raw deflate (zlib type) or zstd frames, inflated to exactly one cluster.
// Like qemu, input past the end of the stream is ignored and any shortfall or excess is EIO.
import { inflateRawSync, constants as zlibConstants } from 'node:zlib';
import { Decompress } from 'fzstd';
import { ImageError } from '../types.ts';

const eio = (): ImageError => new ImageError('Input/output error', 'EIO');

export function inflateZlib(input: Uint8Array, clusterSize: number): Buffer {
  let out: Buffer;
  try {
    // maxOutputLength stops a bomb at one cluster; a truncated stream decodes what it has.
    out = inflateRawSync(input, { finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: clusterSize });
  } catch {
    throw eio();
  }
  if (out.length < clusterSize) throw eio();
  return out;
}

/** Thrown from the output callback to stop the decoder. */
class Stop extends Error {}

/**
 * qemu decodes frames until the cluster is full and fails (EIO) on an error before that or on
 * more output than a cluster. Difference: a frame still going when the cluster is exactly full is
 * accepted here (qemu calls it EIO), since the decoder does not say where frames end.
 */
export function inflateZstd(input: Uint8Array, clusterSize: number): Buffer {
  const out = Buffer.alloc(clusterSize);
  let filled = 0;
  let overflow = false;
  const stream = new Decompress((chunk) => {
    // Stopping here at once means a small frame cannot expand without limit.
    if (filled + chunk.length > clusterSize) {
      overflow = true;
      throw new Stop();
    }
    out.set(chunk, filled);
    filled += chunk.length;
    if (filled === clusterSize) throw new Stop(); // trailing input is ignored, as in qemu
  });
  try {
    stream.push(input, true);
  } catch (e) {
    if (!(e instanceof Stop)) throw eio();
  }
  if (overflow || filled !== clusterSize) throw eio();
  return out;
}
