// Persistent dirty bitmaps: the directory named by the bitmaps extension, checked as qemu's
// bitmap_list_load and qcow2_load_dirty_bitmaps check it when they open an image.
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt, requestOk } from '../bytes.ts';
import type { BitmapsExtension } from './extensions.ts';

const ENTRY_SIZE = 24;
const MAX_TABLE_SIZE = 0x8000000;
const MAX_PHYS_SIZE = 0x20000000n;
const MIN_GRANULARITY_BITS = 9;
const MAX_GRANULARITY_BITS = 31;
const MAX_NAME_SIZE = 1023;
const FLAG_IN_USE = 1;
const FLAG_AUTO = 2;
const RESERVED_FLAGS = 0xfffffffc;
const TABLE_ENTRY_RESERVED = 0xff000000000001fen;
const TABLE_ENTRY_OFFSET = 0x00fffffffffffe00n;
/** instar's limit on bitmap table bytes read while opening (qemu has none; this bounds time). */
const MAX_TABLE_BYTES_CHECKED = 256 * 1024 * 1024;

/** QAPI Qcow2BitmapInfo, keys in schema order. */
export interface BitmapInfo {
  name: string;
  granularity: number;
  flags: ('in-use' | 'auto')[];
}

interface DirEntry {
  tableOffset: bigint;
  tableSize: number;
  flags: number;
  granularityBits: number;
  name: string;
}

/** Reads and checks the directory and each bitmap's table; returns what `info` lists. */
export function readBitmaps(dev: BlockDevice, ext: BitmapsExtension, clusterSize: number, virtualSize: bigint): BitmapInfo[] {
  const entries = readDirectory(dev, ext, clusterSize, virtualSize);
  checkLoadable(dev, entries, clusterSize, virtualSize);
  return entries.map((e) => ({
    name: e.name,
    granularity: 2 ** e.granularityBits,
    flags: [...(e.flags & FLAG_IN_USE ? ['in-use' as const] : []), ...(e.flags & FLAG_AUTO ? ['auto' as const] : [])],
  }));
}

function readDirectory(dev: BlockDevice, ext: BitmapsExtension, clusterSize: number, virtualSize: bigint): DirEntry[] {
  if (ext.directorySize === 0n) throw new ImageError('Requested bitmap directory size is zero');
  const size = Number(ext.directorySize); // bounded by the extension check (64 MiB)
  if (!requestOk(ext.directoryOffset, ext.directorySize)) {
    throw new ImageError('Failed to read bitmap directory: Input/output error', 'EIO');
  }
  const broken = () => new ImageError('Broken bitmap directory');
  const entries: DirEntry[] = [];
  let pos = 0;
  // Each pass consumes at least 24 bytes and at most nb_bitmaps + 1 passes happen.
  while (pos < size) {
    if (pos + ENTRY_SIZE > size) throw broken();
    if (entries.length + 1 > ext.count) throw new ImageError('More bitmaps found than specified in header extension');
    const at = ext.directoryOffset + BigInt(pos);
    const e = readAt(dev, at, ENTRY_SIZE);
    const nameSize = e.readUInt16BE(18);
    const extraSize = e.readUInt32BE(20);
    const entrySize = Math.ceil((ENTRY_SIZE + nameSize + extraSize) / 8) * 8;
    if (pos + entrySize > size) throw broken();
    if (extraSize !== 0) throw new ImageError('Bitmap extra data is not supported');
    const nameBytes = readAt(dev, at + BigInt(ENTRY_SIZE), nameSize);
    const nul = nameBytes.indexOf(0);
    const name = nameBytes.subarray(0, nul < 0 ? nameSize : nul).toString('utf8');
    const entry: DirEntry = {
      tableOffset: e.readBigUInt64BE(0),
      tableSize: e.readUInt32BE(8),
      flags: e.readUInt32BE(12),
      granularityBits: e[17],
      name,
    };
    if (!entryIsValid(entry, e[16], nameSize, clusterSize, virtualSize)) {
      throw new ImageError(`Bitmap '${name}' doesn't satisfy the constraints`);
    }
    entries.push(entry);
    pos += entrySize;
  }
  if (entries.length !== ext.count) throw new ImageError('Less bitmaps found than specified in header extension');
  if (pos !== size) throw broken();
  return entries;
}

function entryIsValid(e: DirEntry, type: number, nameSize: number, clusterSize: number, virtualSize: bigint): boolean {
  if (
    e.tableSize === 0 || e.tableOffset === 0n || e.tableOffset % BigInt(clusterSize) !== 0n ||
    e.tableSize > MAX_TABLE_SIZE || e.granularityBits > MAX_GRANULARITY_BITS ||
    e.granularityBits < MIN_GRANULARITY_BITS || (e.flags & RESERVED_FLAGS) !== 0 ||
    nameSize > MAX_NAME_SIZE || type !== 1
  ) return false;
  const physBytes = BigInt(e.tableSize) * BigInt(clusterSize);
  if (physBytes > MAX_PHYS_SIZE) return false;
  // A consistent bitmap must cover the whole disk.
  return (e.flags & FLAG_IN_USE) !== 0 || virtualSize <= (physBytes * 8n) << BigInt(e.granularityBits);
}

/** What loading each bitmap would refuse: duplicate names, bad table entries, a wrong table size. */
function checkLoadable(dev: BlockDevice, entries: DirEntry[], clusterSize: number, virtualSize: bigint): void {
  const loaded = new Set<string>();
  const checkedTables = new Set<string>();
  let budget = MAX_TABLE_BYTES_CHECKED;
  for (const e of entries) {
    if (e.flags & FLAG_IN_USE && loaded.has(e.name)) continue;
    if (loaded.has(e.name)) throw new ImageError(`Bitmap already exists: ${e.name}`);
    loaded.add(e.name);
    if (e.flags & FLAG_IN_USE) continue; // its data is not loaded
    // tableSize * clusterSize ≤ 512 MiB was checked, so one table is at most 8 MiB; entries past
    // EOF read as zeros (valid), and a table shared by several bitmaps is checked once.
    const key = `${e.tableOffset}:${e.tableSize}`;
    const inFile = e.tableOffset >= BigInt(dev.size) ? 0 : Math.min(e.tableSize * 8, Math.ceil(Number(BigInt(dev.size) - e.tableOffset) / 8) * 8);
    if (!requestOk(e.tableOffset, BigInt(e.tableSize) * 8n)) {
      throw new ImageError(`Could not read bitmap_table table from image for bitmap '${e.name}': Input/output error`, 'EIO');
    }
    if (!checkedTables.has(key)) {
      budget -= inFile;
      if (budget < 0) throw new ImageError('Bitmap tables too large to check');
      checkTable(readAt(dev, e.tableOffset, inFile), e.name, clusterSize);
      checkedTables.add(key);
    }
    if (BigInt(e.tableSize) !== expectedTableSize(virtualSize, e.granularityBits, clusterSize)) {
      throw new ImageError(`Could not read bitmap '${e.name}' from image: Invalid argument`);
    }
  }
}

function checkTable(table: Buffer, name: string, clusterSize: number): void {
  for (let i = 0; i + 8 <= table.length; i += 8) {
    const entry = table.readBigUInt64BE(i);
    const offset = entry & TABLE_ENTRY_OFFSET;
    if ((entry & TABLE_ENTRY_RESERVED) !== 0n || (offset !== 0n && ((entry & 1n) !== 0n || offset % BigInt(clusterSize) !== 0n))) {
      throw new ImageError(`Could not read bitmap_table table from image for bitmap '${name}': Invalid argument`);
    }
  }
}

/** Clusters the serialized bitmap takes: whole 64-bit words of one bit per granule. */
function expectedTableSize(virtualSize: bigint, granularityBits: number, clusterSize: number): bigint {
  if (virtualSize === 0n) return 0n;
  const words = ((virtualSize - 1n) >> BigInt(granularityBits + 6)) + 1n;
  return (words * 8n + BigInt(clusterSize) - 1n) / BigInt(clusterSize);
}
