// `create -f qcow` (version 1) as qemu's qcow_co_create writes it: the 48-byte header, the backing
// file name after it, and a zeroed L1 table written in whole sectors. Deterministic. Encryption
// (the deprecated AES mode) is refused.
import { ImageError, type CreateCapability, type CreateOptionSpec, type CreatePlan } from '../types.ts';

export const QCOW_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: 'Format of the backing image' },
  { name: 'encryption', type: 'bool', help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
  { name: 'encrypt.format', type: 'string', help: "Encrypt the image, format choices: 'aes'" },
  { name: 'encrypt.key-secret', type: 'string', help: 'ID of the secret that provides the AES encryption key' },
];

const SECTOR = 512;
const HEADER_BYTES = 48;

interface QcowPlan {
  size: number;
  /** Recorded in the header; "fat:" (qemu's vvfat special case) is not. */
  backingFile?: string;
  /** Small clusters when the image has a backing file (given at all, even "fat:"). */
  backed: boolean;
}

function plan(options: ReadonlyMap<string, string>, sizeIn: bigint): CreatePlan {
  if (options.get('encryption') === 'on' || options.has('encrypt.format')) {
    throw new ImageError('instar does not create encrypted qcow images (encrypt.format, encryption); nothing was written');
  }
  const size = (((sizeIn + 511n) / 512n) * 512n) % 2n ** 64n;
  if (size === 0n) throw new ImageError('Image size is too small, cannot be zero length');
  if (!Number.isSafeInteger(Number(size))) throw new ImageError('instar cannot create a qcow image of 2^53 bytes or more; nothing was written');
  const backing = options.get('backing_file');
  const p: QcowPlan = { size: Number(size), backingFile: backing === 'fat:' ? undefined : backing, backed: backing !== undefined };
  return p as unknown as CreatePlan;
}

export const qcowCreate: CreateCapability = {
  options: QCOW_CREATE_OPTIONS,
  plan,
  layout(raw) {
    const p = raw as unknown as QcowPlan;
    const name = p.backingFile === undefined ? Buffer.alloc(0) : Buffer.from(p.backingFile);
    // 512-byte clusters and 32 KiB L2 tables with a backing file, 4 KiB both otherwise.
    const [clusterBits, l2Bits] = p.backed ? [9, 12] : [12, 9];
    const headerSize = Math.ceil((HEADER_BYTES + name.length) / 8) * 8;
    const l1Entries = Math.ceil(p.size / 2 ** (clusterBits + l2Bits));
    const l1Bytes = Math.ceil((l1Entries * 8) / SECTOR) * SECTOR;
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32BE(0x514649fb, 0);
    header.writeUInt32BE(1, 4);
    if (p.backingFile !== undefined) {
      header.writeBigUInt64BE(BigInt(HEADER_BYTES), 8);
      header.writeUInt32BE(name.length, 16);
    }
    header.writeBigUInt64BE(BigInt(p.size), 24);
    header[32] = clusterBits;
    header[33] = l2Bits;
    header.writeBigUInt64BE(BigInt(headerSize), 40);
    const writes = [{ pos: 0, bytes: header as Uint8Array }, { pos: headerSize, bytes: new Uint8Array(l1Bytes) }];
    if (name.length > 0) writes.push({ pos: HEADER_BYTES, bytes: name });
    return { image: { length: headerSize + l1Bytes, writes } };
  },
};
