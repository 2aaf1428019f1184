// Serializes a qcow2 header cluster the way qemu's qcow2_update_header lays it out
// (docs/interop/qcow2.txt): the fixed header (72 bytes for version 2, 112 for version 3, then any
// header fields qemu did not know but kept), the extensions in qemu's order (backing format,
// external data file, crypto header, feature name table, bitmaps, unknown extensions as read,
// end marker), then the backing file name. Everything after is zeros up to the cluster's end:
// qemu writes the whole first cluster, so the result is that cluster, byte for byte.
//
// Pure: a model in, bytes out. Used by amend and rebase -u (and create, for its first header).
import { EXT } from './extensions.ts';

/** Everything qemu holds in memory that its header rewrite puts in the first cluster. */
export interface Qcow2HeaderModel {
  version: 2 | 3;
  clusterBits: number;
  /** Virtual size in bytes (qemu writes total_sectors * 512: a multiple of 512). */
  size: bigint;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: bigint;
  refcountTableOffset: bigint;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: bigint;
  /** Version 3 fields (written as zeros for version 2). */
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  compressionType: number;
  /** Bytes of header fields past qemu's 112-byte struct, kept as read (version 3 only). */
  unknownHeaderFields: Uint8Array;
  /** Extension payloads; undefined = the extension is absent. */
  backingFormat?: Uint8Array;
  /** Written only when the incompatible data-file bit is set, as qemu does. */
  dataFile?: Uint8Array;
  crypto?: { offset: bigint; length: bigint };
  bitmaps?: { count: number; directorySize: bigint; directoryOffset: bigint };
  /** Extensions qemu does not know, in the order read (qemu keeps them). */
  unknownExtensions: { magic: number; data: Uint8Array }[];
  backingFile?: Uint8Array;
  /** Read only (never written): a bitmaps extension without its autoclear bit, which qemu warns of and drops. */
  staleBitmaps?: boolean;
}

/** The header does not fit the first cluster (qemu's ENOSPC). */
export class HeaderSpaceError extends Error {
  constructor() {
    super('No space left in the file header');
    this.name = 'HeaderSpaceError';
  }
}

const V2_HEADER_SIZE = 72;
export const V3_HEADER_SIZE = 112;
const FEATURE_ENTRY_SIZE = 48;

/** qemu's feature name table: [type (0 incompatible, 1 compatible, 2 autoclear), bit, name]. */
const FEATURE_NAMES: readonly [number, number, string][] = [
  [0, 0, 'dirty bit'],
  [0, 1, 'corrupt bit'],
  [0, 2, 'external data file'],
  [0, 3, 'compression type'],
  [0, 4, 'extended L2 entries'],
  [1, 0, 'lazy refcounts'],
  [2, 0, 'bitmaps'],
  [2, 1, 'raw external data'],
];

function featureTable(): Buffer {
  const table = Buffer.alloc(FEATURE_NAMES.length * FEATURE_ENTRY_SIZE);
  FEATURE_NAMES.forEach(([type, bit, name], i) => {
    const at = i * FEATURE_ENTRY_SIZE;
    table[at] = type;
    table[at + 1] = bit;
    table.write(name, at + 2, 'latin1');
  });
  return table;
}

/** The bytes of the first cluster qemu writes for this model; throws HeaderSpaceError when it does not fit. */
export function serializeHeader(m: Qcow2HeaderModel): Buffer {
  const clusterSize = 2 ** m.clusterBits;
  const buf = Buffer.alloc(clusterSize);
  if (clusterSize < V3_HEADER_SIZE) throw new HeaderSpaceError();
  buf.writeUInt32BE(0x514649fb, 0);
  buf.writeUInt32BE(m.version, 4);
  buf.writeUInt32BE(m.clusterBits, 20);
  buf.writeBigUInt64BE(m.size, 24);
  buf.writeUInt32BE(m.cryptMethod, 32);
  buf.writeUInt32BE(m.l1Size, 36);
  buf.writeBigUInt64BE(m.l1TableOffset, 40);
  buf.writeBigUInt64BE(m.refcountTableOffset, 48);
  buf.writeUInt32BE(m.refcountTableClusters, 56);
  buf.writeUInt32BE(m.nbSnapshots, 60);
  buf.writeBigUInt64BE(m.snapshotsOffset, 64);
  let at = V2_HEADER_SIZE;
  if (m.version === 3) {
    buf.writeBigUInt64BE(m.incompatible, 72);
    buf.writeBigUInt64BE(m.compatible, 80);
    buf.writeBigUInt64BE(m.autoclear, 88);
    buf.writeUInt32BE(m.refcountOrder, 96);
    buf.writeUInt32BE(V3_HEADER_SIZE + m.unknownHeaderFields.length, 100);
    buf[104] = m.compressionType;
    at = V3_HEADER_SIZE;
  }
  // Kept after the header whatever the version (a version 3 image downgraded keeps them too).
  if (m.unknownHeaderFields.length > clusterSize - at) throw new HeaderSpaceError();
  buf.set(m.unknownHeaderFields, at);
  at += m.unknownHeaderFields.length;
  const add = (magic: number, data: Uint8Array): void => {
    const padded = 8 + Math.ceil(data.length / 8) * 8;
    if (padded > clusterSize - at) throw new HeaderSpaceError();
    buf.writeUInt32BE(magic, at);
    buf.writeUInt32BE(data.length, at + 4);
    buf.set(data, at + 8);
    at += padded;
  };
  if (m.backingFormat) add(EXT.backingFormat, m.backingFormat);
  if (m.dataFile && m.incompatible & 4n) add(EXT.dataFile, m.dataFile);
  if (m.crypto && m.crypto.offset !== 0n) {
    const c = Buffer.alloc(16);
    c.writeBigUInt64BE(m.crypto.offset, 0);
    c.writeBigUInt64BE(m.crypto.length, 8);
    add(EXT.cryptoHeader, c);
  }
  // qemu leaves the table out of small clusters, where it would crowd out the backing name.
  if (m.version === 3 && clusterSize > 4096) add(EXT.featureTable, featureTable());
  if (m.bitmaps && m.bitmaps.count > 0) {
    const b = Buffer.alloc(24);
    b.writeUInt32BE(m.bitmaps.count, 0);
    b.writeBigUInt64BE(m.bitmaps.directorySize, 8);
    b.writeBigUInt64BE(m.bitmaps.directoryOffset, 16);
    add(EXT.bitmaps, b);
  }
  for (const u of m.unknownExtensions) add(u.magic, u.data);
  add(EXT.end, new Uint8Array(0));
  if (m.backingFile) {
    if (m.backingFile.length > clusterSize - at) throw new HeaderSpaceError();
    buf.set(m.backingFile, at);
    buf.writeBigUInt64BE(BigInt(at), 8);
    buf.writeUInt32BE(m.backingFile.length, 16);
  }
  return buf;
}
