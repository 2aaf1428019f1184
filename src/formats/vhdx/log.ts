// The VHDX metadata log. A header with a non-zero log GUID may leave updates to replay; qemu
// scans the circular log for a valid entry sequence and, when it finds one, refuses a read-only
// open (replaying needs a writable file). We scan the same way, sector by sector, with qemu's
// validity rules, so that we refuse exactly the images qemu refuses. Replaying the log for a
// writable open is later work: such opens are refused too, with a message that says so.
import { ImageError, type BlockDevice, type OpenContext } from '../types.ts';
import { errnoError, preadQemu } from '../vpc/file-read.ts';
import { crc32c } from './crc32c.ts';
import { guidEqual, guidIsZero } from './guid.ts';
import type { VhdxHeader } from './headers.ts';

const SECTOR = 4096;
const MiB = 1024 * 1024;
const LOG_ENTRY_SIGNATURE = 0x65676f6c; // "loge"
const ZERO_DESCRIPTOR = 0x6f72657a; // "zero"
const DATA_DESCRIPTOR = 0x63736564; // "desc"

interface EntryHeader {
  checksum: number;
  entryLength: number;
  sequence: bigint;
  descriptorCount: number;
}

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

  private entryHeader(b: Uint8Array): EntryHeader | undefined {
    const v = new DataView(b.buffer, b.byteOffset, 64);
    const entry = {
      checksum: v.getUint32(4, true),
      entryLength: v.getUint32(8, true),
      sequence: v.getBigUint64(16, true),
      descriptorCount: v.getUint32(24, true),
    };
    const valid =
      v.getUint32(0, true) === LOG_ENTRY_SIGNATURE &&
      entry.entryLength <= this.header.logLength &&
      entry.entryLength % SECTOR === 0 &&
      entry.sequence !== 0n &&
      guidEqual(b.subarray(32, 48), this.header.logGuid) &&
      entry.descriptorCount * 32 <= entry.entryLength;
    return valid ? entry : undefined;
  }

  /** qemu's vhdx_validate_log_entry at the current position; returns the entry when valid. */
  validate(previousSequence: bigint): EntryHeader | undefined {
    const first = this.sector(this.read);
    const entry = this.entryHeader(first);
    if (!entry || (previousSequence > 0n && entry.sequence !== previousSequence + 1n)) {
      this.read = this.next(this.read);
      return undefined;
    }
    const descSectors = Math.ceil((entry.descriptorCount + 2) / 128);
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
    if (!this.descriptorsValid(head, entry)) throw errnoError('EINVAL');
    let crc = crc32c(head);
    this.read = this.next(this.read);
    for (let k = descSectors; k < totalSectors; k++) {
      crc = crc32c(this.sector(this.read), crc);
      this.read = this.next(this.read);
    }
    return crc === entry.checksum ? entry : undefined;
  }

  /** Checks the descriptors of an entry whose descriptors fit its first sector. */
  private descriptorsValid(s: Uint8Array, entry: EntryHeader): boolean {
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
}

/** Whether the log holds a valid entry sequence (qemu's vhdx_log_search finding a candidate). */
function logHasEntries(dev: BlockDevice, header: VhdxHeader): boolean {
  const scan = new LogScan(dev, header);
  let found = false;
  for (;;) {
    const tail = scan.read;
    if (scan.validate(0n)) {
      found = true;
      let sequence = 0n;
      for (let e = scan.validate(sequence); e; e = scan.validate(sequence)) sequence = e.sequence;
    }
    if (scan.read < tail) return found;
  }
}

/** qemu's vhdx_parse_log: checks the log fields and refuses a log that would need replaying. */
export function checkLog(dev: BlockDevice, header: VhdxHeader, ctx: OpenContext): void {
  const offset = header.logOffset;
  if (offset < BigInt(MiB) || offset % BigInt(MiB) !== 0n) throw errnoError('EINVAL');
  if (header.logVersion !== 0) throw errnoError('EINVAL');
  if (guidIsZero(header.logGuid) || header.logLength === 0) return;
  if (header.logLength % MiB !== 0) throw errnoError('EINVAL');
  if (!logHasEntries(dev, header)) return;
  const name = ctx.displayName ?? '';
  if (ctx.writable) throw new ImageError(`VHDX image file '${name}' has a log to replay; instar cannot replay VHDX logs yet`);
  // The hint lines follow the message on stderr, as qemu prints error hints.
  throw new ImageError(
    `VHDX image file '${name}' opened read-only, but contains a log that needs to be replayed\n` +
      `To replay the log, run:\nqemu-img check -r all '${name}'`,
  );
}
