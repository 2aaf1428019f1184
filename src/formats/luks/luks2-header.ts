// The LUKS2 binary headers (cryptsetup's docs/on-disk-format-luks2.pdf): two copies, each a
// 4096-byte binary header followed by the JSON metadata area, the pair covered by a SHA-256
// checksum. As cryptsetup does, both copies are checked and the valid one with the higher sequence
// id is used; a copy whose checksum does not match is not used at all.
import { createHash } from 'node:crypto';
import { ImageError, type BlockDevice } from '../types.ts';
import { cString, readAt } from '../bytes.ts';
import { LUKS_MAGIC } from './header.ts';

const SECONDARY_MAGIC = Buffer.from([0x53, 0x4b, 0x55, 0x4c, 0xba, 0xbe]); // "SKUL\xba\xbe"
export const LUKS2_BINARY_HEADER = 4096;
/** The header sizes LUKS2 allows: 16 KiB doubling up to 4 MiB (binary header + JSON area). */
const HEADER_SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096].map((k) => k * 1024);
const CSUM_AT = 448;
const CSUM_LEN = 64;
const PAST_EOF = 'it lies past the end of the file';

export interface Luks2Header {
  /** hdr_size: one binary header plus its JSON area. */
  headerSize: number;
  seqid: bigint;
  uuid: string;
  label: string;
  /** The JSON text (up to its terminating NUL). */
  json: string;
}

/** Whether the first bytes are a LUKS2 primary header (magic and version 2). */
export function isLuks2(head: Uint8Array): boolean {
  return head.length >= 8 && Buffer.from(head.subarray(0, 6)).equals(LUKS_MAGIC) && head[6] === 0 && head[7] === 2;
}

/** One header copy at `offset`, or why it is not valid. */
function readCopy(dev: BlockDevice, offset: number, magic: Buffer): Luks2Header | string {
  if (offset + LUKS2_BINARY_HEADER > dev.size) return PAST_EOF;
  const bin = readAt(dev, offset, LUKS2_BINARY_HEADER);
  if (!bin.subarray(0, 6).equals(magic)) return 'bad magic';
  if (bin.readUInt16BE(6) !== 2) return `version ${bin.readUInt16BE(6)}`;
  const size = bin.readBigUInt64BE(8);
  if (!HEADER_SIZES.some((s) => BigInt(s) === size)) return `invalid header size ${size}`;
  const headerSize = Number(size);
  if (bin.readBigUInt64BE(256) !== BigInt(offset)) return `header offset ${bin.readBigUInt64BE(256)} does not match its position ${offset}`;
  if (offset + headerSize > dev.size) return 'its JSON area lies past the end of the file';
  const alg = bin.subarray(72, 104);
  if (!alg.includes(0) || cString(alg) !== 'sha256') return `unsupported checksum algorithm '${cString(alg.subarray(0, 31)).replace(/[^\x20-\x7e]/g, '?')}'`;
  const whole = readAt(dev, offset, headerSize);
  const stored = Buffer.from(whole.subarray(CSUM_AT, CSUM_AT + 32));
  whole.fill(0, CSUM_AT, CSUM_AT + CSUM_LEN);
  if (!createHash('sha256').update(whole).digest().equals(stored)) return 'checksum mismatch';
  const area = whole.subarray(LUKS2_BINARY_HEADER);
  const end = area.indexOf(0);
  if (end < 0) return 'the JSON area is not NUL terminated';
  for (const [at, len, name] of [[24, 48, 'label'], [168, 40, 'UUID'], [208, 48, 'subsystem']] as const) {
    if (!bin.subarray(at, at + len).includes(0)) return `the ${name} is not NUL terminated`;
  }
  return {
    headerSize,
    seqid: bin.readBigUInt64BE(16),
    uuid: cString(bin.subarray(168, 208)),
    label: cString(bin.subarray(24, 72)),
    json: area.toString('utf8', 0, end),
  };
}

/** The LUKS2 header to use: the valid copy with the higher seqid, or a one-line reason for refusing. */
export function readLuks2Header(dev: BlockDevice): Luks2Header {
  const primary = readCopy(dev, 0, LUKS_MAGIC);
  // The secondary copy follows the primary; when the primary is unreadable its size is unknown,
  // so the sizes LUKS2 allows are tried in turn (as cryptsetup does).
  const offsets = typeof primary === 'string' ? HEADER_SIZES : [primary.headerSize];
  let secondary: Luks2Header | string = 'not found';
  for (const at of offsets) {
    const copy = readCopy(dev, at, SECONDARY_MAGIC);
    // Keep the first reason from a place that does hold a secondary header ("bad magic" says nothing).
    const absent = copy === 'bad magic' || copy === PAST_EOF;
    if (typeof copy !== 'string' || (!absent && secondary === 'not found') || offsets.length === 1) secondary = copy;
    if (typeof copy !== 'string') break;
  }
  if (typeof primary === 'string' && typeof secondary === 'string') {
    throw new ImageError(`LUKS2 header is invalid: primary header: ${primary}; secondary header: ${secondary}`);
  }
  if (typeof primary === 'string') return secondary as Luks2Header;
  if (typeof secondary === 'string') return primary;
  return secondary.seqid > primary.seqid ? secondary : primary;
}
