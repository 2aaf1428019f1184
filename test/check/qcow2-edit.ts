// Byte edits on qemu-made qcow2 images, for damaged copies: the header's table offsets, an L1 or
// L2 entry, a 16-bit refcount in the first refcount block. Big-endian, as in the format.
import { closeSync, openSync, readSync, writeSync } from 'node:fs';

export interface Layout {
  clusterSize: number;
  l1Offset: number;
  refTableOffset: number;
  snapshotsOffset: number;
}

function readBytes(file: string, pos: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, pos);
    return b;
  } finally {
    closeSync(fd);
  }
}

function writeBytes(file: string, pos: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, pos);
  } finally {
    closeSync(fd);
  }
}

export const readU64 = (file: string, pos: number): bigint => readBytes(file, pos, 8).readBigUInt64BE(0);

export function writeU64(file: string, pos: number, value: bigint): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, value));
  writeBytes(file, pos, b);
}

/** Replaces the u64 at `pos` by fn(old). */
export const editU64 = (file: string, pos: number, fn: (v: bigint) => bigint): void => writeU64(file, pos, fn(readU64(file, pos)));

export function layout(file: string): Layout {
  const h = readBytes(file, 0, 72);
  return {
    clusterSize: 2 ** h.readUInt32BE(20),
    l1Offset: Number(h.readBigUInt64BE(40)),
    refTableOffset: Number(h.readBigUInt64BE(48)),
    snapshotsOffset: Number(h.readBigUInt64BE(64)),
  };
}

const OFFSET_MASK = 0x00fffffffffffe00n;

/** Position of L1 entry i. */
export const l1Entry = (file: string, i: number): number => layout(file).l1Offset + 8 * i;

/** Position of entry j of the L2 table named by L1 entry i (standard 8-byte entries unless given). */
export function l2Entry(file: string, i: number, j: number, entryBytes = 8): number {
  return Number(readU64(file, l1Entry(file, i)) & OFFSET_MASK) + entryBytes * j;
}

/** Sets the 16-bit refcount of `cluster` in the first refcount block (default refcount_bits). */
export function setRefcount16(file: string, cluster: number, value: number): void {
  const block = Number(readU64(file, layout(file).refTableOffset) & ~0x1ffn);
  const b = Buffer.alloc(2);
  b.writeUInt16BE(value);
  writeBytes(file, block + 2 * cluster, b);
}
