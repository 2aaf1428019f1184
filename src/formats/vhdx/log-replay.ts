// Replaying the VHDX log, planned as qemu's vhdx_log_flush does it on a writable open: the
// headers are first bumped twice (qemu's first user-visible write: new file and data write
// GUIDs, the log GUID kept), then every entry of the active sequence is written out (data
// descriptors as their 4 KiB sector, zero descriptors as zeros), then, after a flush, the headers
// are written twice more with a zero log GUID. A crash anywhere in between leaves a log that still
// replays, so the plan is safe to cut at any write.
//
// Where qemu would write outside the image's existing metadata and data (the header section, the
// log itself, past the end of the file, or growing the file), instar refuses the whole replay
// before writing anything: those are not updates a VHDX writer makes.
import { ImageError, type BlockDevice } from '../types.ts';
import { errnoError, preadQemu, qemuFileLength } from '../vpc/file-read.ts';
import type { RepairStep } from '../repair.ts';
import { crc32c } from './crc32c.ts';
import { HEADER_OFFSETS, HEADER_SIZE, type HeaderPair } from './headers.ts';
import { DATA_DESCRIPTOR, descriptorSectors, descriptorsValid, MiB, parseEntryHeader, SECTOR, type LogSequence } from './log.ts';

/** Most bytes of data sectors one replay holds in memory (a real log carries a few metadata sectors). */
const MAX_REPLAY_BYTES = 256 * MiB;

/** 16 random bytes as qemu's vhdx_guid_generate makes them (a version 4 UUID). */
export function randomGuid(): Uint8Array {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

/** qemu's vhdx_update_header over both headers' bytes: each call writes the non-current one. */
class HeaderWriter {
  private raws: [Uint8Array, Uint8Array];
  private current: 0 | 1;
  private readonly session: Uint8Array;

  constructor(
    pair: HeaderPair,
    private readonly guid: () => Uint8Array,
  ) {
    this.raws = [pair.raws[0].slice(), pair.raws[1].slice()];
    this.current = pair.current;
    // qemu's session GUID: one per open, the file write GUID of every header it writes.
    this.session = guid();
  }

  update(newDataGuid: boolean, logGuid?: Uint8Array): RepairStep {
    const target: 0 | 1 = this.current === 0 ? 1 : 0;
    const raw = this.raws[target];
    const v = new DataView(raw.buffer, raw.byteOffset, HEADER_SIZE);
    const active = new DataView(this.raws[this.current].buffer, this.raws[this.current].byteOffset, HEADER_SIZE);
    v.setBigUint64(8, BigInt.asUintN(64, active.getBigUint64(8, true) + 1n), true);
    raw.set(this.session, 16);
    if (newDataGuid) raw.set(this.guid(), 32);
    if (logGuid) raw.set(logGuid, 48);
    v.setUint32(4, 0, true);
    v.setUint32(4, crc32c(raw), true);
    this.current = target;
    return { kind: 'write', pos: HEADER_OFFSETS[target], bytes: raw.slice() };
  }
}

/** The one error qemu gives for a log it cannot flush: the open fails with EINVAL. */
const invalid = () => errnoError('EINVAL');

/** Refuses a target outside what a VHDX writer updates through the log. */
function checkTarget(dev: BlockDevice, pair: HeaderPair, offset: bigint, length: bigint): void {
  const { logOffset, logLength } = pair.header;
  const end = offset + length;
  let where: string | undefined;
  if (offset < BigInt(MiB)) where = 'into the header section';
  else if (offset < logOffset + BigInt(logLength) && end > logOffset) where = 'over the log itself';
  else if (end > BigInt(dev.size)) where = 'past the end of the file';
  if (where) throw new ImageError(`instar refuses to replay this VHDX log: an entry writes ${where} (file offset ${offset})`);
}

/**
 * The writes that replay the active log sequence `sequence`, checked as qemu checks them while
 * flushing (each failure is qemu's EINVAL), then bounded by instar's own rules (see above).
 */
export function planLogReplay(dev: BlockDevice, pair: HeaderPair, sequence: LogSequence, guid: () => Uint8Array = randomGuid): RepairStep[] {
  const { header } = pair;
  const sectorAt = (pos: number) => preadQemu(dev, header.logOffset + BigInt(pos), SECTOR, () => errnoError('EIO'));
  const next = (pos: number) => (pos + SECTOR >= header.logLength ? 0 : pos + SECTOR);
  const headers = new HeaderWriter(pair, guid);
  const steps: RepairStep[] = [headers.update(true), { kind: 'barrier' }, headers.update(true), { kind: 'barrier' }];
  const fileLength = BigInt(qemuFileLength(dev));
  let read = sequence.start;
  let held = 0;
  for (let n = 0; n < sequence.count; n++) {
    if (read === sequence.end) throw invalid();
    const first = sectorAt(read);
    const entry = parseEntryHeader(first, header);
    if (!entry || entry.flushedFileOffset > fileLength) throw invalid();
    // More than one descriptor sector never gets here: the search already failed on it.
    if (descriptorSectors(entry.descriptorCount) > 1 || !descriptorsValid(first, entry)) throw invalid();
    read = next(read);
    const d = new DataView(first.buffer, first.byteOffset, SECTOR);
    for (let i = 0; i < entry.descriptorCount; i++) {
      const at = 64 + 32 * i;
      const target = d.getBigUint64(at + 16, true);
      if (d.getUint32(at, true) === DATA_DESCRIPTOR) {
        if (read === sequence.end) throw invalid();
        const data = sectorAt(read);
        read = next(read);
        const dv = new DataView(data.buffer, data.byteOffset, SECTOR);
        if (((BigInt(dv.getUint32(4, true)) << 32n) | BigInt(dv.getUint32(4092, true))) !== entry.sequence) throw invalid();
        checkTarget(dev, pair, target, BigInt(SECTOR));
        held += SECTOR;
        if (held > MAX_REPLAY_BYTES) throw new ImageError('instar refuses to replay a VHDX log of more than 256 MiB of updates');
        // The sector's first 8 and last 4 bytes travel in the descriptor.
        const bytes = new Uint8Array(SECTOR);
        bytes.set(first.subarray(at + 8, at + 16), 0);
        bytes.set(data.subarray(8, 4092), 8);
        bytes.set(first.subarray(at + 4, at + 8), 4092);
        steps.push({ kind: 'write', pos: Number(target), bytes }, { kind: 'barrier' });
      } else {
        const length = d.getBigUint64(at + 8, true);
        checkTarget(dev, pair, target, length);
        steps.push({ kind: 'zero', pos: Number(target), length: Number(length) }, { kind: 'barrier' });
      }
    }
    // qemu grows a file shorter than the entry's last file offset (to a whole MiB, when unaligned).
    if (fileLength < entry.lastFileOffset && entry.lastFileOffset % BigInt(MiB) !== 0n) {
      throw new ImageError(`instar refuses to replay this VHDX log: it would grow the file to ${entry.lastFileOffset} bytes`);
    }
  }
  // qemu's bdrv_flush, then vhdx_log_reset: a zero log GUID means an empty log.
  const empty = new Uint8Array(16);
  steps.push({ kind: 'barrier' }, headers.update(false, empty), { kind: 'barrier' }, headers.update(false, empty), { kind: 'barrier' });
  return steps;
}
