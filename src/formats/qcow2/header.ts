// The qcow2 header (docs/interop/qcow2.txt) and the checks qemu's qcow2_do_open makes on it, in
// qemu's order, so that a broken image fails with the same message qemu would print first.
import { ImageError, type BlockDevice } from '../types.ts';
import { INT64_MAX, U64_MASK, readAt, requestOk } from '../bytes.ts';

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** sizeof(QCowHeader) in qemu, compression_type and its padding included. */
export const HEADER_STRUCT_SIZE = 112;
const MIN_CLUSTER_BITS = 9;
const MAX_CLUSTER_BITS = 21;
export const MAX_L1_BYTES = 32 * 1024 * 1024; // QCOW_MAX_L1_SIZE
const MAX_REFTABLE_BYTES = 8 * 1024 * 1024; // QCOW_MAX_REFTABLE_SIZE
export const MAX_SNAPSHOTS = 65536;
export const SNAPSHOT_HEADER_SIZE = 40;
const INT_MAX = 0x7fffffffn;

export const INCOMPAT = { dirty: 1n, corrupt: 2n, dataFile: 4n, compression: 8n, extendedL2: 16n } as const;
const INCOMPAT_KNOWN = 0x1fn;
export const COMPAT_LAZY_REFCOUNTS = 1n;
export const AUTOCLEAR = { bitmaps: 1n, dataFileRaw: 2n } as const;
export const CRYPT = { none: 0, aes: 1, luks: 2 } as const;
export const COMPRESSION_TYPES = ['zlib', 'zstd'] as const;

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: bigint;
  backingFileSize: number;
  clusterBits: number;
  clusterSize: number;
  /** The virtual size field as stored (qemu reports it rounded down to 512 bytes). */
  size: bigint;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: bigint;
  refcountTableOffset: bigint;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: bigint;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  /** Where header extensions stop: the backing file name, else the end of the first cluster. */
  extensionsEnd: number;
  /** Bits of guest offset covered by one L2 table entry's cluster plus the L2 index. */
  l2Bits: number;
  extendedL2: boolean;
}

/** Parses and validates the fixed header; throws ImageError with qemu's message. */
export function parseHeader(dev: BlockDevice): Qcow2Header {
  const b = readAt(dev, 0, HEADER_STRUCT_SIZE);
  if (b.readUInt32BE(0) !== QCOW2_MAGIC) throw new ImageError('Image is not in qcow2 format');
  const version = b.readUInt32BE(4);
  if (version < 2 || version > 3) throw new ImageError(`Unsupported qcow2 version ${version}`);
  const clusterBits = b.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new ImageError(`Unsupported cluster size: 2^${clusterBits}`);
  }
  const clusterSize = 2 ** clusterBits;

  let incompatible = 0n, compatible = 0n, autoclear = 0n, refcountOrder = 4, headerLength = 72;
  if (version === 3) {
    incompatible = b.readBigUInt64BE(72);
    compatible = b.readBigUInt64BE(80);
    autoclear = b.readBigUInt64BE(88);
    refcountOrder = b.readUInt32BE(96);
    headerLength = b.readUInt32BE(100);
    if (headerLength < 104) throw new ImageError('qcow2 header too short');
  }
  if (headerLength > clusterSize) throw new ImageError('qcow2 header exceeds cluster size');

  const backingFileOffset = b.readBigUInt64BE(8);
  if (backingFileOffset > BigInt(clusterSize)) throw new ImageError('Invalid backing file offset');
  const extensionsEnd = backingFileOffset !== 0n ? Number(backingFileOffset) : clusterSize;

  // Images older than the compression_type field are zlib.
  const compressionType = headerLength > 104 ? b[104] : 0;
  validateCompressionType(compressionType, incompatible);

  const h: Qcow2Header = {
    version: version as 2 | 3,
    backingFileOffset,
    backingFileSize: b.readUInt32BE(16),
    clusterBits,
    clusterSize,
    size: b.readBigUInt64BE(24),
    cryptMethod: b.readUInt32BE(32),
    l1Size: b.readUInt32BE(36),
    l1TableOffset: b.readBigUInt64BE(40),
    refcountTableOffset: b.readBigUInt64BE(48),
    refcountTableClusters: b.readUInt32BE(56),
    nbSnapshots: b.readUInt32BE(60),
    snapshotsOffset: b.readBigUInt64BE(64),
    incompatible,
    compatible,
    autoclear,
    refcountOrder,
    headerLength,
    compressionType,
    extensionsEnd,
    extendedL2: (incompatible & INCOMPAT.extendedL2) !== 0n,
    l2Bits: 0,
  };
  h.l2Bits = clusterBits - (h.extendedL2 ? 4 : 3);
  return h;
}

function validateCompressionType(type: number, incompatible: bigint): void {
  if (type > 1) throw new ImageError(`qcow2: unknown compression type: ${type}`);
  const bitSet = (incompatible & INCOMPAT.compression) !== 0n;
  if (type === 0 && bitSet) throw new ImageError('qcow2: Compression type incompatible feature bit must not be set');
  if (type !== 0 && !bitSet) throw new ImageError('qcow2: Compression type incompatible feature bit must be set');
}

/** Incompatible feature bits this implementation (and qemu) do not know. */
export function unknownIncompatible(h: Qcow2Header): bigint {
  return h.incompatible & ~INCOMPAT_KNOWN & U64_MASK;
}

/** The checks qemu makes after the feature bits, up to reading the L1 table. */
export function validateTables(h: Qcow2Header, writable: boolean): void {
  if ((h.incompatible & INCOMPAT.corrupt) !== 0n && writable) {
    throw new ImageError('qcow2: Image is corrupt; cannot be opened read/write');
  }
  const subclusterSize = h.extendedL2 ? h.clusterSize / 32 : h.clusterSize;
  if (subclusterSize < 512) throw new ImageError(`Unsupported subcluster size: ${subclusterSize}`);
  if (h.refcountOrder > 6) throw new ImageError('Reference count entry width too large; may not exceed 64 bits');
  if (h.refcountTableClusters === 0) throw new ImageError('Image does not contain a reference count table');
  validateTable(h, h.refcountTableOffset, h.refcountTableClusters, h.clusterSize, MAX_REFTABLE_BYTES, 'Reference count table');
  validateTable(h, h.snapshotsOffset, h.nbSnapshots, SNAPSHOT_HEADER_SIZE, SNAPSHOT_HEADER_SIZE * MAX_SNAPSHOTS, 'Snapshot table');
  validateTable(h, h.l1TableOffset, h.l1Size, 8, MAX_L1_BYTES, 'Active L1 table');
  const l1Needed = l1EntriesFor(h, h.size);
  if (l1Needed > INT_MAX) throw new ImageError('Image is too big');
  if (BigInt(h.l1Size) < l1Needed) throw new ImageError('L1 table is too small');
  // qemu reads the L1 table here; only a request past its block layer's limit can fail.
  if (h.l1Size > 0 && !requestOk(h.l1TableOffset, BigInt(h.l1Size) * 8n)) {
    throw new ImageError('Could not read L1 table: Input/output error', 'EIO');
  }
  if (h.cryptMethod > CRYPT.luks) {
    // qemu prints the uint32 with %d.
    throw new ImageError(`Unsupported encryption method ${h.cryptMethod | 0}`);
  }
  if (!requestOk(h.refcountTableOffset, BigInt(h.refcountTableClusters) * BigInt(h.clusterSize))) {
    throw new ImageError('Could not initialize refcount handling: Input/output error', 'EIO');
  }
}

/** qemu's qcow2_validate_table: entry count first, then offset range and alignment. */
export function validateTable(h: Qcow2Header, offset: bigint, entries: number, entryLen: number, maxBytes: number, name: string): void {
  if (entries > Math.floor(maxBytes / entryLen)) throw new ImageError(`${name} too large`);
  const bytes = BigInt(entries) * BigInt(entryLen);
  if (INT64_MAX - bytes < offset || offset % BigInt(h.clusterSize) !== 0n) {
    throw new ImageError(`${name} offset invalid`);
  }
}

/** qemu's size_to_l1, including its uint64 wrap-around for sizes near 2^64. */
export function l1EntriesFor(h: Qcow2Header, size: bigint): bigint {
  const shift = BigInt(h.clusterBits + h.l2Bits);
  return ((size + (1n << shift) - 1n) & U64_MASK) >> shift;
}
