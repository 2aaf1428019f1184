// An existing QED image's L1 and L2 tables, read whole into memory for a writer that continues
// them (convert -n, safe rebase's copy): each L1 entry checked as qemu's qed_check_table_offset
// checks it, and the bytes held bounded.
import { readAt } from '../bytes.ts';
import type { BlockDevice } from '../types.ts';
import { validTableOffset, type QedHeader } from './header.ts';
import type { QedState } from './writer.ts';

/** The tables instar keeps in memory for one copy. */
const TABLES_LIMIT = 256 * 1024 * 1024;

/** The tables and file end as qemu's open finds them, or why instar will not hold them. */
export function readQedTables(dev: BlockDevice, h: QedHeader): QedState | { problem: string } {
  const tableBytes = h.tableSize * h.clusterSize;
  const l1 = Buffer.from(readAt(dev, Number(h.l1Offset), tableBytes));
  const l2 = new Map<number, Buffer>();
  let held = tableBytes;
  for (let i = 0; i < tableBytes / 8; i++) {
    const offset = l1.readBigUInt64LE(i * 8);
    if (offset === 0n) continue;
    if (!validTableOffset(h, offset)) return { problem: 'an L1 entry points outside the file' };
    held += tableBytes;
    if (held > TABLES_LIMIT) return { problem: 'its tables are too large' };
    l2.set(i, Buffer.from(readAt(dev, Number(offset), tableBytes)));
  }
  return { l1Offset: Number(h.l1Offset), l1, l2, fileEnd: Number(h.fileSize) };
}
