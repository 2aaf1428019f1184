// The internal snapshot table as qemu keeps it in memory (QCowSnapshot) and writes it back
// (qcow2_write_snapshots): every entry is rewritten with at least the 24 bytes of extra data qemu
// knows (vm_state_size_large, disk_size, icount); extra data past those is kept as it was.
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import { SNAPSHOT_HEADER_SIZE, type Qcow2Header } from './header.ts';
import { readSnapshots } from './snapshots.ts';

/** sizeof(QCowSnapshotExtraData). */
const KNOWN_EXTRA = 24;
/** QCOW_MAX_SNAPSHOTS_SIZE: qemu refuses to write a bigger table (EFBIG). */
const MAX_TABLE_BYTES = 1024 * 65536;

export interface SnapshotEntry {
  l1TableOffset: bigint;
  l1Size: number;
  id: Buffer;
  name: Buffer;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  vmStateSize: bigint;
  diskSize: bigint;
  icount: bigint;
  /** Extra data past the 24 bytes qemu knows, kept as read. */
  unknownExtra: Buffer;
}

/** qcow2_read_snapshots: every entry (its checks and messages are readSnapshots'). */
export function readSnapshotTable(dev: BlockDevice, h: Qcow2Header): { list: SnapshotEntry[]; tableBytes: number } {
  readSnapshots(dev, h);
  const list: SnapshotEntry[] = [];
  let offset = Number(h.snapshotsOffset); // readSnapshots bounded the table to 64 MiB past it
  for (let i = 0; i < h.nbSnapshots; i++) {
    offset = Math.ceil(offset / 8) * 8;
    const e = readAt(dev, offset, SNAPSHOT_HEADER_SIZE);
    offset += SNAPSHOT_HEADER_SIZE;
    const idSize = e.readUInt16BE(12);
    const nameSize = e.readUInt16BE(14);
    const extraSize = e.readUInt32BE(36);
    const extra = Buffer.alloc(KNOWN_EXTRA);
    readAt(dev, offset, Math.min(KNOWN_EXTRA, extraSize)).copy(extra);
    const unknownExtra = extraSize > KNOWN_EXTRA ? readAt(dev, offset + KNOWN_EXTRA, extraSize - KNOWN_EXTRA) : Buffer.alloc(0);
    offset += extraSize;
    const id = readAt(dev, offset, idSize);
    offset += idSize;
    const name = readAt(dev, offset, nameSize);
    offset += nameSize;
    list.push({
      l1TableOffset: e.readBigUInt64BE(0),
      l1Size: e.readUInt32BE(8),
      // qemu keeps the strings as C strings: a NUL inside ends them.
      id: cut(id),
      name: cut(name),
      dateSec: e.readUInt32BE(16),
      dateNsec: e.readUInt32BE(20),
      vmClockNsec: e.readBigUInt64BE(24),
      vmStateSize: extraSize >= 8 ? extra.readBigUInt64BE(0) : BigInt(e.readUInt32BE(32)),
      diskSize: extraSize >= 16 ? extra.readBigUInt64BE(8) : (h.size / 512n) * 512n,
      icount: extraSize >= 24 ? extra.readBigUInt64BE(16) : (1n << 64n) - 1n,
      unknownExtra,
    });
  }
  // qemu's snapshots_size: what it frees when it writes the table elsewhere.
  return { list, tableBytes: offset - Number(h.snapshotsOffset) };
}

function cut(b: Buffer): Buffer {
  const nul = b.indexOf(0);
  return nul < 0 ? b : b.subarray(0, nul);
}

/** The table's bytes as qcow2_write_snapshots lays them out (entries 8-byte aligned). */
export function serializeSnapshotTable(list: readonly SnapshotEntry[]): Buffer {
  let size = 0;
  for (const sn of list) {
    size = Math.ceil(size / 8) * 8 + SNAPSHOT_HEADER_SIZE + KNOWN_EXTRA + sn.unknownExtra.length + sn.id.length + sn.name.length;
    if (size > MAX_TABLE_BYTES) throw new ImageError('File too large', 'EFBIG');
  }
  const out = Buffer.alloc(size);
  let at = 0;
  for (const sn of list) {
    at = Math.ceil(at / 8) * 8;
    out.writeBigUInt64BE(sn.l1TableOffset, at);
    out.writeUInt32BE(sn.l1Size, at + 8);
    out.writeUInt16BE(sn.id.length, at + 12);
    out.writeUInt16BE(sn.name.length, at + 14);
    out.writeUInt32BE(sn.dateSec, at + 16);
    out.writeUInt32BE(sn.dateNsec, at + 20);
    out.writeBigUInt64BE(sn.vmClockNsec, at + 24);
    // A VM state past 4 GiB is left out of the old 32-bit field (older readers see none).
    out.writeUInt32BE(sn.vmStateSize <= 0xffffffffn ? Number(sn.vmStateSize) : 0, at + 32);
    out.writeUInt32BE(KNOWN_EXTRA + sn.unknownExtra.length, at + 36);
    at += SNAPSHOT_HEADER_SIZE;
    out.writeBigUInt64BE(sn.vmStateSize, at);
    out.writeBigUInt64BE(sn.diskSize, at + 8);
    out.writeBigUInt64BE(sn.icount, at + 16);
    at += KNOWN_EXTRA;
    sn.unknownExtra.copy(out, at);
    at += sn.unknownExtra.length;
    sn.id.copy(out, at);
    at += sn.id.length;
    sn.name.copy(out, at);
    at += sn.name.length;
  }
  return out;
}
