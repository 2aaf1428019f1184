// The VHDX metadata log. A header with a non-zero log GUID may leave updates to replay; qemu
// scans the circular log for a valid entry sequence and, when it finds one, refuses a read-only
// open (replaying needs a writable file) and replays it on a writable one (log-replay.ts). We
// scan the same way, sector by sector, with qemu's validity rules, so that we refuse and replay
// exactly the images qemu does.
import { ImageError, type BlockDevice, type OpenContext } from '../types.ts';
import { errnoError, preadQemu } from '../vpc/file-read.ts';
import { crc32c } from './crc32c.ts';
import { guidEqual, guidIsZero } from './guid.ts';
import type { VhdxHeader } from './headers.ts';

export const SECTOR = 4096;
export const MiB = 1024 * 1024;
const LOG_ENTRY_SIGNATURE = 0x65676f6c; // "loge"
export const ZERO_DESCRIPTOR = 0x6f72657a; // "zero"
export const DATA_DESCRIPTOR = 0x63736564; // "desc"

export interface EntryHeader {
  checksum: number;
  entryLength: number;
  sequence: bigint;
  descriptorCount: number;
  /** The file's size when the entry was written: a shorter file now is a truncated one. */
  flushedFileOffset: bigint;
  /** The file's size the entry's updates need. */
  lastFileOffset: bigint;
}

/** qemu's vhdx_log_hdr_is_valid over an entry's first sector. */
export function parseEntryHeader(b: Uint8Array, header: VhdxHeader): EntryHeader | undefined {
  const v = new DataView(b.buffer, b.byteOffset, 64);
  const entry = {
    checksum: v.getUint32(4, true),
    entryLength: v.getUint32(8, true),
    sequence: v.getBigUint64(16, true),
    descriptorCount: v.getUint32(24, true),
    flushedFileOffset: v.getBigUint64(48, true),
    lastFileOffset: v.getBigUint64(56, true),
  };
  const valid =
    v.getUint32(0, true) === LOG_ENTRY_SIGNATURE &&
    entry.entryLength <= header.logLength &&
    entry.entryLength % SECTOR === 0 &&
    entry.sequence !== 0n &&
    guidEqual(b.subarray(32, 48), header.logGuid) &&
    entry.descriptorCount * 32 <= entry.entryLength;
  return valid ? entry : undefined;
}

/** qemu's vhdx_log_desc_is_valid for every descriptor of an entry whose descriptors fit its first sector. */
export function descriptorsValid(s: Uint8Array, entry: EntryHeader): boolean {
  const v = new DataView(s.buffer, s.byteOffset, SECTOR);
  for (let i = 0; i < entry.descriptorCount; i++) {
    const at = 64 + 32 * i;
    const signature = v.getUint32(at, true);
    const ok =
      v.getBigUint64(at + 24, true) === entry.sequence &&
      v.getBigUint64(at + 16, true) % BigInt(SECTOR) === 0n &&
      ((signature === ZERO_DESCRIPTOR && v.getBigUint64(at + 8, true) % BigInt(SECTOR) === 0n) ||
        signature === DATA_DESCRIPTOR);
    if (!ok) return false;
  }
  return true;
}

/** Sectors holding an entry's header and descriptors (never 0). */
export const descriptorSectors = (count: number): number => Math.ceil((count + 2) / 128);

/** A walk over the log as qemu's vhdx_log_search makes it, with a read budget against loops. */
class LogScan {
  read = 0;
  private budget: number;

  constructor(
    private dev: BlockDevice,
    private header: VhdxHeader,
  ) {
    // A well-formed scan reads the log about once; qemu can loop forever on some hostile logs.
    this.budget = 4 * header.logLength + 16 * SECTOR;
  }

  private sector(pos: number): Uint8Array {
    this.budget -= SECTOR;
    if (this.budget < 0) throw new ImageError('VHDX log scan does not terminate');
    return preadQemu(this.dev, this.header.logOffset + BigInt(pos), SECTOR, () => errnoError('EIO'));
  }

  private next(pos: number): number {
    return pos + SECTOR >= this.header.logLength ? 0 : pos + SECTOR;
  }

  /** qemu's vhdx_validate_log_entry at the current position; returns the entry when valid. */
  validate(previousSequence: bigint): EntryHeader | undefined {
    const first = this.sector(this.read);
    const entry = parseEntryHeader(first, this.header);
    if (!entry || (previousSequence > 0n && entry.sequence !== previousSequence + 1n)) {
      this.read = this.next(this.read);
      return undefined;
    }
    const descSectors = descriptorSectors(entry.descriptorCount);
    const totalSectors = entry.entryLength / SECTOR;
    // qemu reads every descriptor sector into the same 4 KiB at the start of its buffer, so with
    // more than one (over 126 descriptors) it validates descriptors from the last sector read and
    // from uninitialised memory, and fails: such entries always end the open with EINVAL.
    if (descSectors > 1) {
      for (let k = 1, pos = this.next(this.read); k < descSectors; k++, pos = this.next(pos)) this.sector(pos);
      throw errnoError('EINVAL');
    }
    const head = first.slice();
    head.fill(0, 4, 8);
    // qemu fails the whole open on a malformed descriptor of an otherwise valid entry.
    if (!descriptorsValid(head, entry)) throw errnoError('EINVAL');
    let crc = crc32c(head);
    this.read = this.next(this.read);
    for (let k = descSectors; k < totalSectors; k++) {
      crc = crc32c(this.sector(this.read), crc);
      this.read = this.next(this.read);
    }
    return crc === entry.checksum ? entry : undefined;
  }
}

/** The active log sequence: where it starts and ends in the log, and how many entries it has. */
export interface LogSequence {
  start: number;
  end: number;
  count: number;
  /** The sequence number qemu gives its next log entry after replaying this sequence (its last one's plus one). */
  next: bigint;
}

/** qemu's vhdx_log_search: the valid entry sequence whose first entry has the highest sequence number. */
function findLogSequence(dev: BlockDevice, header: VhdxHeader): LogSequence | undefined {
  const scan = new LogScan(dev, header);
  let candidate: (LogSequence & { sequence: bigint }) | undefined;
  for (;;) {
    const tail = scan.read;
    const first = scan.validate(0n);
    if (first) {
      const current = { start: tail, end: scan.read, count: 1, sequence: first.sequence, next: first.sequence + 1n };
      // As qemu: the second entry is checked against no sequence number, later ones against the previous.
      let sequence = 0n;
      for (let e = scan.validate(sequence); e; e = scan.validate(sequence)) {
        current.end = scan.read;
        current.count++;
        sequence = e.sequence;
        current.next = e.sequence + 1n;
      }
      if (!candidate || current.sequence > candidate.sequence) candidate = current;
    }
    if (scan.read < tail) return candidate;
  }
}

/**
 * qemu's vhdx_parse_log: checks the log fields; a log that needs replaying is refused on a
 * read-only open and returned (for the caller to replay) on a writable one.
 */
export function checkLog(dev: BlockDevice, header: VhdxHeader, ctx: OpenContext): LogSequence | undefined {
  const offset = header.logOffset;
  if (offset < BigInt(MiB) || offset % BigInt(MiB) !== 0n) throw errnoError('EINVAL');
  if (header.logVersion !== 0) throw errnoError('EINVAL');
  if (guidIsZero(header.logGuid) || header.logLength === 0) return undefined;
  if (header.logLength % MiB !== 0) throw errnoError('EINVAL');
  const sequence = findLogSequence(dev, header);
  if (!sequence || ctx.writable) return sequence;
  const name = ctx.displayName ?? '';
  // The hint lines follow the message on stderr, as qemu prints error hints.
  throw new ImageError(
    `VHDX image file '${name}' opened read-only, but contains a log that needs to be replayed\n` +
      `To replay the log, run:\nqemu-img check -r all '${name}'`,
  );
}
