// convert -n into an existing qcow (version 1) image, as qemu's qcow driver writes into one: the
// writer (writer.ts) goes on from the image's L1 and L2 tables and the file's length, so a new L2
// table or cluster lands at the end of the file where qemu's allocator puts it, and an allocated
// cluster is written in place. Encrypted images, images with a backing file and images with
// compressed clusters (qemu rewrites those elsewhere) are refused.
import { readAt } from '../bytes.ts';
import type { BlockDevice, ImageWriter } from '../types.ts';
import { readQcowHeader } from './header.ts';
import { QcowWriter } from './writer.ts';

const COMPRESSED = 1n << 63n;
/** The tables instar keeps in memory for one copy. */
const TABLES_LIMIT = 256 * 1024 * 1024;

export function qcowInPlaceWriter(dev: BlockDevice): ImageWriter | { refused: string } {
  const refused = (why: string) => ({ refused: `instar cannot convert into this qcow image (${why}); nothing was written` });
  const h = readQcowHeader(dev);
  if (h.cryptMethod !== 0) return refused('it is encrypted');
  if (h.backingFile !== '') return refused('it has a backing file');
  const l2Bytes = 8 * 2 ** h.l2Bits;
  const l1 = Buffer.from(readAt(dev, Number(h.l1Offset), h.l1Size * 8));
  const l2 = new Map<number, Buffer>();
  let held = l1.length;
  for (let i = 0; i < h.l1Size; i++) {
    const offset = l1.readBigUInt64BE(i * 8);
    if (offset === 0n) continue;
    held += l2Bytes;
    if (held > TABLES_LIMIT) return refused('its tables are too large');
    const table = Buffer.from(readAt(dev, Number(offset), l2Bytes));
    for (let e = 0; e < l2Bytes; e += 8) if (table.readBigUInt64BE(e) & COMPRESSED) return refused('it has compressed clusters');
    l2.set(i, table);
  }
  const plan = { size: Number(h.size), backed: false };
  return new QcowWriter(dev, plan, { clusterBits: h.clusterBits, l2Bits: h.l2Bits, l1Offset: Number(h.l1Offset), l1, l2, fileEnd: dev.size });
}
