// One cluster compressed as qemu's qcow2 driver compresses it for -c: zlib as a raw deflate
// stream with a 4 KiB window (qcow2_zlib_compress: windowBits -12, default level), or one zstd
// frame (qcow2_zstd_compress, default level 3). qemu keeps a compressed cluster only when it is
// shorter than the cluster; otherwise it writes the cluster as it is.
import { deflateRawSync } from 'node:zlib';
import { encodeFrame } from './zstd.ts';

/** The compressed bytes, or undefined when they would take `limit` bytes or more. */
export function compressCluster(data: Uint8Array, zstd: boolean, limit: number): Uint8Array | undefined {
  if (zstd) return encodeFrame(data, limit - 1);
  const out = deflateRawSync(data, { windowBits: 12, memLevel: 9 });
  return out.length < limit ? out : undefined;
}
