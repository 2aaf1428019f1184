// The qcow (version 1) header: qemu's qcow_open checks, in its order and wording.
import { ImageError, type BlockDevice } from '../types.ts';
import { cString, readAt, requestOk } from '../bytes.ts';

export const QCOW_MAGIC = 0x514649fb;
export const CRYPT_AES = 1;
const HEADER_SIZE = 48;
const MAX_BACKING_NAME = 1023;
const INT_MAX = 2 ** 31 - 1;
const U64_MAX = (1n << 64n) - 1n;
const REQUEST_MAX_BYTES = 0x7ffffe00n;

export interface QcowHeader {
  size: bigint;
  clusterBits: number;
  l2Bits: number;
  cryptMethod: number;
  l1Offset: bigint;
  l1Size: number;
  backingFile: string;
}

export function readQcowHeader(dev: BlockDevice): QcowHeader {
  const h = readAt(dev, 0, HEADER_SIZE);
  const version = h.readUInt32BE(4);
  const backingOffset = h.readBigUInt64BE(8);
  const backingSize = h.readUInt32BE(16);
  const size = h.readBigUInt64BE(24);
  const clusterBits = h[32];
  const l2Bits = h[33];
  const cryptMethod = h.readUInt32BE(36);
  const l1Offset = h.readBigUInt64BE(40);
  if (h.readUInt32BE(0) !== QCOW_MAGIC) throw new ImageError('Image not in qcow format');
  if (version !== 1) {
    const hint = version === 2 || version === 3 ? "\nTry the 'qcow2' driver instead." : '';
    throw new ImageError(`qcow (v1) does not support qcow version ${version}${hint}`);
  }
  if (size <= 1n) throw new ImageError('Image size is too small (must be at least 2 bytes)');
  if (clusterBits < 9 || clusterBits > 16) throw new ImageError('Cluster size must be between 512 and 64k');
  if (l2Bits < 6 || l2Bits > 13) throw new ImageError('L2 table size must be between 512 and 64k');
  if (cryptMethod > CRYPT_AES) throw new ImageError('invalid encryption method in qcow header');
  const span = 2n ** BigInt(clusterBits + l2Bits);
  if (size > U64_MAX - span) throw new ImageError('Image too large');
  const l1Size = (size + span - 1n) / span;
  if (l1Size > BigInt(Math.floor(INT_MAX / 8))) throw new ImageError('Image too large');
  // qemu reads the whole L1 table here in one request; instar reads it on demand but fails the
  // same way (a request is at most BDRV_REQUEST_MAX_BYTES).
  if (!requestOk(l1Offset, l1Size * 8n) || l1Size * 8n > REQUEST_MAX_BYTES) throw new ImageError('Input/output error', 'EIO');
  let backingFile = '';
  if (backingOffset !== 0n) {
    if (backingSize > MAX_BACKING_NAME) throw new ImageError('Backing file name too long');
    if (!requestOk(backingOffset, BigInt(backingSize))) throw new ImageError('Input/output error', 'EIO');
    backingFile = cString(readAt(dev, backingOffset, backingSize));
  }
  return { size, clusterBits, l2Bits, cryptMethod, l1Offset, l1Size: Number(l1Size), backingFile };
}
