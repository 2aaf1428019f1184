// The bitmap directory as qemu's bitmap_list_load and bitmap_list_store see it: entries with the
// name as raw bytes (qemu keeps it as a C string), parsed from an image the driver already opened
// (formats/qcow2/bitmaps.ts checked it then), and serialized back the way qemu writes it.
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import type { BitmapsExtension } from './extensions.ts';

export const FLAG_IN_USE = 1;
export const FLAG_AUTO = 2;
const ENTRY_SIZE = 24;
const TABLE_ENTRY_RESERVED = 0xff000000000001fen;
export const TABLE_ENTRY_OFFSET = 0x00fffffffffffe00n;

/** One Qcow2Bitmap of qemu's list. */
export interface DirBitmap {
  name: Buffer;
  tableOffset: bigint;
  tableSize: number;
  flags: number;
  granularityBits: number;
}

/** Entry bytes for a name (calc_dir_entry_size). */
export const entrySize = (nameBytes: number): number => Math.ceil((ENTRY_SIZE + nameBytes) / 8) * 8;

/** Reads the directory the extension names (already validated by the driver's open). */
export function readDirectory(dev: BlockDevice, ext: BitmapsExtension): DirBitmap[] {
  const size = Number(ext.directorySize); // at most 64 MiB (extension check)
  const dir = readAt(dev, ext.directoryOffset, size);
  const list: DirBitmap[] = [];
  let pos = 0;
  while (pos + ENTRY_SIZE <= size && list.length < ext.count) {
    const nameSize = dir.readUInt16BE(pos + 18);
    const extra = dir.readUInt32BE(pos + 20);
    if (extra !== 0 || pos + entrySize(nameSize) > size) throw new ImageError('Broken bitmap directory');
    const raw = dir.subarray(pos + ENTRY_SIZE, pos + ENTRY_SIZE + nameSize);
    const nul = raw.indexOf(0);
    list.push({
      name: Buffer.from(nul < 0 ? raw : raw.subarray(0, nul)),
      tableOffset: dir.readBigUInt64BE(pos),
      tableSize: dir.readUInt32BE(pos + 8),
      flags: dir.readUInt32BE(pos + 12),
      granularityBits: dir[pos + 17],
    });
    pos += entrySize(nameSize);
  }
  return list;
}

/** bitmap_list_store's bytes: each entry with its name, padded to 8 bytes. */
export function serializeDirectory(list: readonly DirBitmap[]): Buffer {
  const out = Buffer.alloc(list.reduce((n, bm) => n + entrySize(bm.name.length), 0));
  let pos = 0;
  for (const bm of list) {
    out.writeBigUInt64BE(bm.tableOffset, pos);
    out.writeUInt32BE(bm.tableSize, pos + 8);
    out.writeUInt32BE(bm.flags, pos + 12);
    out[pos + 16] = 1;
    out[pos + 17] = bm.granularityBits;
    out.writeUInt16BE(bm.name.length, pos + 18);
    bm.name.copy(out, pos + ENTRY_SIZE);
    pos += entrySize(bm.name.length);
  }
  return out;
}

/** check_table_entry for every entry: undefined when one is invalid (qemu's bitmap_table_load fails). */
export function parseTable(bytes: Buffer, clusterSize: number): bigint[] | undefined {
  const table: bigint[] = [];
  for (let at = 0; at + 8 <= bytes.length; at += 8) {
    const entry = bytes.readBigUInt64BE(at);
    const offset = entry & TABLE_ENTRY_OFFSET;
    if (entry & TABLE_ENTRY_RESERVED) return undefined;
    if (offset !== 0n && ((entry & 1n) !== 0n || offset % BigInt(clusterSize) !== 0n)) return undefined;
    table.push(entry);
  }
  return table;
}
