// The log entry qemu's vhdx driver writes for every BAT change while convert allocates blocks
// (vhdx_log_write_and_flush): one 4 KiB entry header with one data descriptor, then one data
// sector holding the BAT page as it is after the change. qemu replays the entry at once and
// clears the header's log GUID, so the entry stays in the log region as history that no reader
// replays; instar writes the same entries so that the file's allocated size (qemu-img info's
// "disk size") and the log region match qemu's, and writes the BAT page itself.
import { randomBytes } from 'node:crypto';
import { crc32c } from './crc32c.ts';

const SECTOR = 4096;
/** An entry: its header sector and one data sector. */
export const LOG_ENTRY_SIZE = 2 * SECTOR;

/** A random version-4 GUID, as qemu generates a new log GUID for each entry. */
function logGuid(): Buffer {
  const b = randomBytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

export interface LogEntryFields {
  /** The entry's offset inside the log (qemu's tail: the log is empty before each entry). */
  tail: number;
  sequence: bigint;
  /** The file's length after the allocation (flushed and last file offset alike). */
  fileLength: number;
  /** The file offset of the BAT page and its 4 KiB as they are after the change. */
  pageOffset: number;
  page: Uint8Array;
}

/** The 8 KiB of one entry, checksummed (CRC-32C over the whole entry, checksum field zero). */
export function logEntry(f: LogEntryFields): Buffer {
  const entry = Buffer.alloc(LOG_ENTRY_SIZE);
  const page = Buffer.from(f.page.buffer, f.page.byteOffset, f.page.byteLength);
  entry.write('loge', 0, 'latin1');
  entry.writeUInt32LE(LOG_ENTRY_SIZE, 8);
  entry.writeUInt32LE(f.tail, 12);
  entry.writeBigUInt64LE(f.sequence, 16);
  entry.writeUInt32LE(1, 24);
  logGuid().copy(entry, 32);
  entry.writeBigUInt64LE(BigInt(f.fileLength), 48);
  entry.writeBigUInt64LE(BigInt(f.fileLength), 56);
  // The data descriptor keeps the page's first 8 and last 4 bytes, which the data sector's own
  // signature and sequence fields take.
  const desc = 64;
  entry.write('desc', desc, 'latin1');
  page.copy(entry, desc + 4, SECTOR - 4, SECTOR);
  page.copy(entry, desc + 8, 0, 8);
  entry.writeBigUInt64LE(BigInt(f.pageOffset), desc + 16);
  entry.writeBigUInt64LE(f.sequence, desc + 24);
  const data = SECTOR;
  entry.write('data', data, 'latin1');
  entry.writeUInt32LE(Number(f.sequence >> 32n), data + 4);
  page.copy(entry, data + 8, 8, SECTOR - 4);
  entry.writeUInt32LE(Number(f.sequence & 0xffff_ffffn), data + SECTOR - 4);
  entry.writeUInt32LE(crc32c(entry), 4);
  return entry;
}
