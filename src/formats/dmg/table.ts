// The chunk table of a UDIF (.dmg) image, built as qemu's block/dmg.c builds it: find the "koly"
// trailer, then read the "mish" blocks from the resource fork or, failing that, from the base64
// <data> elements of the XML property list. Chunk kinds qemu cannot read are left out of the
// table (reading them then fails with EIO), as in a qemu without the bzip2/lzfse modules.
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import { errnoError } from '../vpc/file-read.ts';

export const UDZE = 0x00000000; // zeros
export const UDRW = 0x00000001; // stored as is
export const UDIG = 0x00000002; // ignored: reads as zeros
export const UDZO = 0x80000005; // zlib
const UDBZ = 0x80000006; // bzip2: no module in the Debian builds
const ULFO = 0x80000007; // lzfse: no module in the Debian builds
const UDCM = 0x7ffffffe; // comment
const UDLE = 0xffffffff; // last entry

/** qemu's limits on one chunk, so that a chunk fits a 32-bit size and bounded buffers. */
const LENGTHS_MAX = 64 * 1024 * 1024;
const SECTORCOUNTS_MAX = LENGTHS_MAX / 512;
const PLIST_MAX = 16 * 1024 * 1024;
const MISH_HEADER = 204;
const RESOURCE_MAX = 256 * 1024 * 1024;
const ENTRY = 40;
const U64 = (1n << 64n) - 1n;

export interface Chunk {
  type: number;
  /** First guest sector (u64, wrapping as in qemu). */
  sector: bigint;
  sectorCount: bigint;
  /** Where the stored bytes are in the file (u64). */
  offset: bigint;
  length: number;
}

export interface DmgTable {
  chunks: Chunk[];
  totalSectors: bigint;
  /** qemu's warn_report_once lines (printed on open; instar does not print them yet). */
  warnings: string[];
}

/** An EINVAL open failure preceded by qemu's error_report line. */
function reported(line: string): ImageError {
  const e = errnoError('EINVAL') as ImageError & { reports?: string[] };
  e.reports = [line];
  return e;
}

class MishReader {
  readonly chunks: Chunk[] = [];
  readonly warnings: string[] = [];

  constructor(private readonly dataForkOffset: bigint) {}

  private warnOnce(line: string): void {
    if (!this.warnings.includes(line)) this.warnings.push(line);
  }

  /** dmg_read_mish_block: anything that is not a mish block of at least 244 bytes is skipped. */
  add(b: Buffer): void {
    // qemu passes the length as a uint32.
    const count = Math.min(b.length, 0xffffffff);
    if (count < 244 || b.readUInt32BE(0) !== 0x6d697368) return;
    const outOffset = b.readBigUInt64BE(8);
    const inOffset = (this.dataForkOffset + b.readBigUInt64BE(0x18)) & U64;
    const entries = Math.floor((count - MISH_HEADER) / ENTRY);
    for (let e = 0; e < entries; e++) {
      const at = MISH_HEADER + e * ENTRY;
      const type = b.readUInt32BE(at);
      if (type !== UDZE && type !== UDRW && type !== UDIG && type !== UDZO) {
        if (type === UDBZ) this.warnOnce('dmg-bzip2 module is missing, accessing bzip2 compressed blocks will result in I/O errors');
        else if (type === ULFO) this.warnOnce('dmg-lzfse module is missing, accessing lzfse compressed blocks will result in I/O errors');
        else if (type !== UDCM && type !== UDLE) {
          // qemu warns once per process for unknown types, whatever the type.
          if (!this.warnings.some((w) => w.startsWith('Image contains chunks of unknown type'))) {
            this.warnings.push(`Image contains chunks of unknown type ${type.toString(16)}, accessing them will result in I/O errors`);
          }
        }
        continue;
      }
      const i = this.chunks.length;
      const sector = (b.readBigUInt64BE(at + 8) + outOffset) & U64;
      const sectorCount = b.readBigUInt64BE(at + 0x10);
      // Zero and ignored chunks are never buffered, so their size is unbounded.
      if (type !== UDZE && type !== UDIG && sectorCount > BigInt(SECTORCOUNTS_MAX)) {
        throw reported(`sector count ${sectorCount} for chunk ${i} is larger than max (${SECTORCOUNTS_MAX})`);
      }
      const offset = (b.readBigUInt64BE(at + 0x18) + inOffset) & U64;
      const length = b.readBigUInt64BE(at + 0x20);
      if (length > BigInt(LENGTHS_MAX)) throw reported(`length ${length} for chunk ${i} is larger than max (${LENGTHS_MAX})`);
      this.chunks.push({ type, sector, sectorCount, offset, length: Number(length) });
    }
  }
}

/** dmg_find_koly_offset: the trailer may start anywhere in the last 515 bytes (odd file sizes). */
function findKoly(dev: BlockDevice): number {
  // qemu's file length is st_size rounded up to whole sectors.
  const length = Math.ceil(dev.size / 512) * 512;
  if (length < 512) throw new ImageError('dmg file must be at least 512 bytes long');
  const offset = length > 511 + 512 ? length - 511 - 512 : 0;
  const buf = readAt(dev, offset, Math.min(length, 515));
  const at = buf.indexOf('koly', 0, 'latin1');
  if (at < 0) throw new ImageError('Could not locate UDIF trailer in dmg file');
  return offset + at;
}

function readResourceFork(dev: BlockDevice, mish: MishReader, begin: bigint, length: bigint): void {
  const dataOffset = readAt(dev, begin, 4).readUInt32BE(0);
  if (BigInt(dataOffset) > length) throw errnoError('EINVAL');
  const count = readAt(dev, begin + 8n, 4).readUInt32BE(0);
  // The sum is a uint32 in qemu.
  if (count === 0 || BigInt((dataOffset + count) % 2 ** 32) > length) throw errnoError('EINVAL');
  let offset = begin + BigInt(dataOffset);
  const end = offset + BigInt(count);
  while (offset < end) {
    const size = readAt(dev, offset, 4).readUInt32BE(0);
    if (size === 0 || BigInt(size) > end - offset) throw errnoError('EINVAL');
    offset += 4n;
    // qemu allocates the resource whole (and aborts when it cannot); no real mish block is near this.
    if (size > RESOURCE_MAX) throw errnoError('ENOMEM');
    mish.add(readAt(dev, offset, size));
    offset += BigInt(size);
  }
}

/** Values of the base64 alphabet; '=' counts as a zero digit (as in glib), other bytes are skipped. */
const BASE64_DIGIT = (() => {
  const t = new Int8Array(256).fill(-1);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  for (let i = 0; i < alphabet.length; i++) t[alphabet.charCodeAt(i)] = i;
  t[0x3d] = 0;
  return t;
})();

/**
 * glib's g_base64_decode, which qemu uses: bytes outside the alphabet are skipped, '=' does not
 * end the text but is a zero digit whose group then yields fewer bytes (a '=' third in a group of
 * four drops the group's second byte, a '=' fourth drops its third), and a partial last group is
 * dropped. Node's decoder stops at the first '=' instead.
 */
export function base64Decode(text: string): Buffer {
  const out = Buffer.alloc(Math.floor(text.length / 4) * 3 + 1);
  let n = 0;
  let bits = 0;
  let digits = 0;
  let third = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const v = c < 256 ? BASE64_DIGIT[c] : -1;
    if (v < 0) continue;
    bits = ((bits << 6) | v) & 0xffffff;
    digits++;
    if (digits === 3) third = c === 0x3d;
    if (digits === 4) {
      out[n++] = bits >>> 16;
      if (!third) out[n++] = (bits >>> 8) & 0xff;
      if (c !== 0x3d) out[n++] = bits & 0xff;
      digits = 0;
    }
  }
  return out.subarray(0, n);
}

function readPlist(dev: BlockDevice, mish: MishReader, begin: bigint, length: bigint): void {
  if (length === 0n || length > BigInt(PLIST_MAX)) throw errnoError('EINVAL');
  const raw = readAt(dev, begin, Number(length));
  // qemu searches the buffer as a C string: a NUL ends it.
  const nul = raw.indexOf(0);
  const xml = raw.toString('latin1', 0, nul < 0 ? raw.length : nul);
  for (let pos = 0; ; ) {
    const open = xml.indexOf('<data>', pos);
    if (open < 0) break;
    const close = xml.indexOf('</data>', open + 6);
    if (close < 0) throw errnoError('EINVAL'); // malformed XML
    mish.add(base64Decode(xml.slice(open + 6, close)));
    pos = close + 1;
  }
}

/** dmg_open up to the table: qemu's checks in qemu's order. */
export function readDmgTable(dev: BlockDevice): DmgTable {
  const koly = BigInt(findKoly(dev));
  const u64 = (at: number): bigint => readAt(dev, koly + BigInt(at), 8).readBigUInt64BE(0);
  const dataForkOffset = u64(0x18);
  if (dataForkOffset > koly) throw errnoError('EINVAL');
  const rsrcOffset = u64(0x28);
  const rsrcLength = u64(0x30);
  if (rsrcOffset >= koly || rsrcLength > koly - rsrcOffset) throw errnoError('EINVAL');
  const xmlOffset = u64(0xd8);
  const xmlLength = u64(0xe0);
  if (xmlOffset >= koly || xmlLength > koly - xmlOffset) throw errnoError('EINVAL');
  const totalSectors = u64(0x1ec);
  if (totalSectors > (1n << 63n) - 1n) throw errnoError('EINVAL');
  const mish = new MishReader(dataForkOffset);
  if (rsrcLength !== 0n) readResourceFork(dev, mish, rsrcOffset, rsrcLength);
  else if (xmlLength !== 0n) readPlist(dev, mish, xmlOffset, xmlLength);
  else throw errnoError('EINVAL');
  // qemu 7.2 and 10.0 accept a table without chunks (and crash reading it); instar's reads fail.
  return { chunks: mish.chunks, totalSectors, warnings: mish.warnings };
}
