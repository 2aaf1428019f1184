// Builds cloop V2.0 images byte by byte: the 128-byte shell preamble qemu probes for, the block
// size and block count (big-endian u32), n_blocks + 1 big-endian u64 offsets, then zlib blocks.
import { deflateSync } from 'node:zlib';

export const CLOOP_PREAMBLE = '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n';

export function cloopHeader(blockSize: number, nBlocks: number): Buffer {
  const h = Buffer.alloc(136);
  h.write(CLOOP_PREAMBLE, 0, 'latin1');
  h.writeUInt32BE(blockSize, 128);
  h.writeUInt32BE(nBlocks, 132);
  return h;
}

/** A well-formed image from uncompressed blocks (each exactly blockSize bytes) or raw streams. */
export function buildCloop(blockSize: number, blocks: (Buffer | { stream: Buffer })[]): Buffer {
  const streams = blocks.map((b) => ('stream' in b ? b.stream : deflateSync(b)));
  const table = Buffer.alloc((blocks.length + 1) * 8);
  let at = 136 + table.length;
  table.writeBigUInt64BE(BigInt(at), 0);
  streams.forEach((s, i) => {
    at += s.length;
    table.writeBigUInt64BE(BigInt(at), (i + 1) * 8);
  });
  return Buffer.concat([cloopHeader(blockSize, blocks.length), table, ...streams]);
}

/** A block of `size` bytes with a recognisable pattern. */
export function patternBlock(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + seed * 31 + (i >> 9)) & 0xff;
  return b;
}
