// The internal snapshot table, read as qemu's qcow2_read_snapshots does (not in repair mode).
import { ImageError, type BlockDevice, type SnapshotInfo } from '../types.ts';
import { cString, int64Number, ioContext, readAt } from '../bytes.ts';
import { SNAPSHOT_HEADER_SIZE, type Qcow2Header } from './header.ts';

const MAX_EXTRA_DATA = 1024; // QCOW_MAX_SNAPSHOT_EXTRA_DATA
const MAX_TABLE_BYTES = 1024 * 65536; // QCOW_MAX_SNAPSHOTS_SIZE
const INT_MAX = 0x7fffffff;
const NO_ICOUNT = (1n << 64n) - 1n;

/** Reads every entry. nb_snapshots (≤ 65536) and the 64 MiB table limit bound the work. */
export function readSnapshots(dev: BlockDevice, h: Qcow2Header, l1s?: SnapshotL1[]): SnapshotInfo[] {
  return ioContext('Failed to read snapshot table', () => readTable(dev, h, l1s));
}

/** Where a snapshot's own L1 table is (for reading the disk as the snapshot saw it). */
export interface SnapshotL1 {
  l1TableOffset: bigint;
  l1Size: number;
}

function readTable(dev: BlockDevice, h: Qcow2Header, l1s?: SnapshotL1[]): SnapshotInfo[] {
  const list: SnapshotInfo[] = [];
  let offset = h.snapshotsOffset; // validated: cluster aligned, far below 2^63
  let tableLength = 0;
  for (let i = 0; i < h.nbSnapshots; i++) {
    tableLength = Math.ceil(tableLength / 8) * 8;
    offset = ((offset + 7n) / 8n) * 8n;
    const e = readAt(dev, offset, SNAPSHOT_HEADER_SIZE);
    offset += BigInt(SNAPSHOT_HEADER_SIZE);
    const idSize = e.readUInt16BE(12);
    const nameSize = e.readUInt16BE(14);
    const extraSize = e.readUInt32BE(36);
    if (extraSize > MAX_EXTRA_DATA) {
      throw new ImageError(
        `Too much extra metadata in snapshot table entry ${i}\n` +
          'You can force-remove this extra metadata with qemu-img check -r all',
      );
    }
    const extra = Buffer.alloc(24);
    readAt(dev, offset, Math.min(24, extraSize)).copy(extra);
    offset += BigInt(extraSize);
    let vmStateSize = BigInt(e.readUInt32BE(32));
    if (extraSize >= 8) vmStateSize = extra.readBigUInt64BE(0);
    const icount = extraSize >= 24 ? extra.readBigUInt64BE(16) : NO_ICOUNT;
    const id = cString(readAt(dev, offset, idSize));
    offset += BigInt(idSize);
    const name = cString(readAt(dev, offset, nameSize));
    offset += BigInt(nameSize);

    tableLength += SNAPSHOT_HEADER_SIZE + extraSize + idSize + nameSize;
    if (tableLength > MAX_TABLE_BYTES || offset - h.snapshotsOffset > BigInt(INT_MAX)) {
      throw new ImageError(
        'Snapshot table is too big\n' +
          `You can force-remove all ${h.nbSnapshots - i} overhanging snapshots with qemu-img check -r all`,
      );
    }
    const vmClockNsec = e.readBigUInt64BE(24);
    const info: SnapshotInfo = {
      id,
      name,
      'vm-state-size': int64Number(vmStateSize),
      'date-sec': e.readUInt32BE(16),
      'date-nsec': e.readUInt32BE(20),
      'vm-clock-sec': Number(vmClockNsec / 1_000_000_000n),
      'vm-clock-nsec': Number(vmClockNsec % 1_000_000_000n),
    };
    if (icount !== NO_ICOUNT) info.icount = int64Number(icount);
    list.push(info);
    l1s?.push({ l1TableOffset: e.readBigUInt64BE(0), l1Size: e.readUInt32BE(8) });
  }
  return list;
}
