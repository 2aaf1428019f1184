// convert -n into an existing VHDX, as qemu's vhdx driver writes into one. Its first guest write
// updates both headers (the session's file write GUID, new data write GUIDs). A FULLY_PRESENT block takes the data in place; any other block is allocated at the
// file's length rounded up to 1 MiB (the file grown by a block), its data written, and its BAT
// entry changed through the log: headers naming a new log GUID, a log entry holding the BAT
// sector as it will be, the sector itself, headers with the log GUID cleared. A cut between the
// entry and the sector leaves a log that qemu replays (check -r all, or any writable open).
import { readAt } from '../bytes.ts';
import { ImageError, type BlockDevice } from '../types.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';
import { BlockState } from './bat.ts';
import { crc32c } from './crc32c.ts';
import { guidIsZero } from './guid.ts';
import { HeaderPair, randomGuid } from './header-update.ts';
import { readHeaders, readRegionTable, RegionList } from './headers.ts';
import { LOG_ENTRY_SIZE, logEntry } from './writer-log.ts';
import type { VhdxImage } from './driver.ts';

const MiB = 1024 * 1024;
const SECTOR = 4096;
const OFFSET_MASK = 0xffff_ffff_fff0_0000n;
/** Header section: nothing of a block may lie in its first MiB (qemu's EFAULT). */
const HEADER_SECTION = MiB;
/** The BAT instar keeps in memory for one copy. */
const BAT_LIMIT = 256 * 1024 * 1024;
/** Block states qemu allocates a new block for on a write. */
const ALLOCATES = new Set<number>([BlockState.NotPresent, BlockState.Undefined, BlockState.Zero, BlockState.Unmapped, BlockState.UnmappedV095]);

/** Where qemu's GUIDs come from: random, or given by tests that replay qemu's. */
export interface VhdxGuidSource {
  session(): Uint8Array;
  dataWrite(): Uint8Array;
  log(): Uint8Array;
}

const RANDOM: VhdxGuidSource = { session: randomGuid, dataWrite: randomGuid, log: randomGuid };

interface Layout {
  blockSize: number;
  chunkRatio: number;
  batOffset: number;
  bat: Buffer;
  logOffset: number;
  logLength: number;
  fileLength: number;
  virtualSize: number;
}

class VhdxInPlace {
  private readonly put: (buf: Uint8Array, pos: number) => void;
  /** qemu's s->log: where the next entry goes (a replay at open leaves it at the start too). */
  private logWrite = 0;

  /**
   * `visibleWrite`: the open's log replay made qemu's first visible write already; `sequence`: the
   * next log entry's number (1, or the replayed sequence's last plus one).
   */
  constructor(private readonly dev: BlockDevice, private readonly l: Layout, private readonly headers: HeaderPair, private readonly guids: VhdxGuidSource, private visibleWrite: boolean, private sequence: bigint) {
    this.put = writableOutput(dev);
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.l.virtualSize);
    if (!this.visibleWrite) {
      this.headers.update(() => this.guids.dataWrite());
      this.visibleWrite = true;
    }
    const { blockSize, chunkRatio } = this.l;
    for (let done = 0; done < data.length; ) {
      const pos = offset + done;
      const block = Math.floor(pos / blockSize);
      const inBlock = pos - block * blockSize;
      const piece = data.subarray(done, done + Math.min(data.length - done, blockSize - inBlock));
      const index = block + Math.floor(block / chunkRatio);
      const entry = this.l.bat.readBigUInt64LE(index * 8);
      if (Number(entry & 7n) === BlockState.FullyPresent) this.put(piece, Number(entry & OFFSET_MASK) + inBlock);
      else this.allocate(index, piece, inBlock);
      done += piece.length;
    }
  }

  /** vhdx_allocate_block, the data, then the BAT entry through the log (vhdx_log_write_and_flush). */
  private allocate(index: number, piece: Uint8Array, inBlock: number): void {
    const start = Math.ceil(this.l.fileLength / MiB) * MiB;
    const end = start + this.l.blockSize;
    if (!Number.isSafeInteger(end)) throw new ImageError('instar refuses a VHDX block past 2^53 bytes');
    this.dev.truncate!(end);
    this.l.fileLength = end;
    this.put(piece, start + inBlock);
    const entry = BigInt(start) | BigInt(BlockState.FullyPresent);
    const at = this.l.batOffset + index * 8;
    const sectorAt = Math.floor(at / SECTOR) * SECTOR;
    const sector = readAt(this.dev, sectorAt, SECTOR);
    sector.writeBigUInt64LE(entry, at - sectorAt);
    const guid = this.guids.log();
    this.headers.update(undefined, guid);
    const logged = logEntry({ tail: this.logWrite, sequence: this.sequence, fileLength: this.l.fileLength, pageOffset: sectorAt, page: sector });
    logged.set(guid, 32);
    logged.writeUInt32LE(0, 4);
    logged.writeUInt32LE(crc32c(logged), 4);
    this.put(logged, this.l.logOffset + this.logWrite);
    this.logWrite = (this.logWrite + LOG_ENTRY_SIZE) % this.l.logLength;
    this.sequence++;
    this.put(sector, sectorAt);
    this.l.bat.writeBigUInt64LE(entry, index * 8);
    this.headers.update(undefined, new Uint8Array(16));
  }

  finish(): void {}
}

/** The writer for `image` (opened from `dev`, writable) as qemu writes it, or why instar does not. */
export function vhdxInPlaceWriter(dev: BlockDevice, image: VhdxImage, guids: VhdxGuidSource = RANDOM): VhdxInPlace | { refused: string } {
  const refused = (why: string) => ({ refused: `instar cannot convert into this vhdx image (${why}); nothing was written` });
  if (!dev.truncate) return refused('its file cannot be grown');
  const pair = readHeaders(dev);
  // A log GUID left without entries to replay: qemu's first BAT change would fail (ENOTSUP).
  if (!guidIsZero(pair.header.logGuid)) return refused('its header names a log');
  const { bat: region } = readRegionTable(dev, new RegionList());
  const { blockSize, chunkRatio } = image.metadata;
  const blocks = Math.ceil(image.virtualSize / blockSize);
  const entries = blocks + Math.floor((blocks - 1) / chunkRatio);
  if (entries * 8 > BAT_LIMIT) return refused('its block table is too large');
  const batOffset = Number(region.fileOffset);
  const logOffset = Number(pair.header.logOffset);
  const logLength = pair.header.logLength;
  if (logLength < LOG_ENTRY_SIZE || logLength % LOG_ENTRY_SIZE !== 0) return refused('its log is too small');
  const bat = readAt(dev, batOffset, entries * 8);
  // Present blocks must lie inside the file, past the header section, apart from each other and
  // from the log and the BAT (open checked the regions qemu checks; these are the rest).
  const used: [number, number, string][] = [[logOffset, logOffset + logLength, 'log'], [batOffset, batOffset + region.length, 'block table']];
  for (let block = 0; block < blocks; block++) {
    const entry = bat.readBigUInt64LE((block + Math.floor(block / chunkRatio)) * 8);
    const state = Number(entry & 7n);
    if (state === BlockState.FullyPresent) {
      const start = Number(entry & OFFSET_MASK);
      if (start < HEADER_SECTION || start + blockSize > dev.size) return refused(`block ${block} lies outside its data area`);
      used.push([start, start + blockSize, `block ${block}`]);
    } else if (!ALLOCATES.has(state)) {
      return refused(`block ${block} has state ${state}, which qemu cannot write`);
    }
  }
  used.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < used.length; i++) {
    if (used[i][0] < used[i - 1][1]) return refused(`its ${used[i][2]} overlaps its ${used[i - 1][2]}`);
  }
  // Measured: qemu 7.2 and 10.0 leave the headers alone until the first guest write.
  const headers = new HeaderPair(writableOutput(dev), dev, pair.raws, pair.current, guids.session());
  const layout = { blockSize, chunkRatio, batOffset, bat, logOffset, logLength, fileLength: dev.size, virtualSize: image.virtualSize };
  return new VhdxInPlace(dev, layout, headers, guids, image.logReplayed, image.nextLogSequence ?? 1n);
}
