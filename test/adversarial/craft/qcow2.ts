// qcow2 images crafted byte by byte: a valid empty v3 image (header, header extensions, backing
// name, refcount table and block, L1 table) whose every field a case may override. Offsets are
// from docs/interop/qcow2.txt.
import { deflateRawSync } from 'node:zlib';

export interface Qcow2Spec {
  version?: number;
  clusterBits?: number;
  virtualSize?: bigint;
  l1Size?: number;
  l1Offset?: bigint;
  refcountTableOffset?: bigint;
  refcountTableClusters?: number;
  snapshots?: number;
  snapshotsOffset?: bigint;
  cryptMethod?: number;
  incompatible?: bigint;
  autoclear?: bigint;
  refcountOrder?: number;
  headerLength?: number;
  compressionType?: number;
  backing?: string | Buffer;
  backingFormat?: string;
  /** Overrides of the backing name's stored offset and length (for out-of-range cases). */
  backingOffset?: bigint;
  backingSize?: number;
  dataFile?: string;
  /** Clusters after the tables (the data area), keyed by guest cluster index: raw bytes. */
  data?: Map<number, Buffer>;
  /** Compressed clusters: guest cluster index → the compressed stream stored for it. */
  compressed?: Map<number, Buffer>;
}

const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_DATA_FILE = 0x44415441;

function ext(type: number, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(type, 0);
  head.writeUInt32BE(data.length, 4);
  const pad = Buffer.alloc((8 - (data.length % 8)) % 8);
  return Buffer.concat([head, data, pad]);
}

/** Builds the image; layout: header cluster, refcount table, refcount block, L1, L2, data. */
export function qcow2(spec: Qcow2Spec = {}): Buffer {
  const clusterBits = spec.clusterBits ?? 16;
  const cluster = 2 ** Math.min(Math.max(clusterBits, 9), 21);
  const version = spec.version ?? 3;
  const virtualSize = spec.virtualSize ?? 1048576n;
  const l2Entries = cluster / 8;
  const l1Needed = Number((virtualSize + BigInt(cluster * l2Entries) - 1n) / BigInt(cluster * l2Entries));
  const l1Size = spec.l1Size ?? Math.min(l1Needed, 1024);
  const dataClusters = Math.max(...[...(spec.data?.keys() ?? []), ...(spec.compressed?.keys() ?? []), -1]) + 1;
  // Clusters: 0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2, 5… data.
  const l1Clusters = Math.max(1, Math.ceil((Math.min(l1Size, 1024) * 8) / cluster));
  const l2At = 3 + l1Clusters;
  const firstData = l2At + 1;
  const compressedBytes = [...(spec.compressed?.values() ?? [])].reduce((n, b) => n + Math.ceil(b.length / cluster) * cluster, 0);
  const total = (firstData + dataClusters) * cluster + compressedBytes;
  const img = Buffer.alloc(total);

  const header = img;
  header.write('QFI\xfb', 0, 'latin1');
  header.writeUInt32BE(version, 4);
  header.writeUInt32BE(clusterBits, 20);
  header.writeBigUInt64BE(virtualSize & 0xffffffffffffffffn, 24);
  header.writeUInt32BE(spec.cryptMethod ?? 0, 32);
  header.writeUInt32BE(l1Size >>> 0, 36);
  header.writeBigUInt64BE(spec.l1Offset ?? BigInt(3 * cluster), 40);
  header.writeBigUInt64BE(spec.refcountTableOffset ?? BigInt(cluster), 48);
  header.writeUInt32BE(spec.refcountTableClusters ?? 1, 56);
  header.writeUInt32BE(spec.snapshots ?? 0, 60);
  header.writeBigUInt64BE(spec.snapshotsOffset ?? 0n, 64);
  let incompatible = spec.incompatible ?? 0n;
  const autoclear = spec.autoclear ?? 0n;
  if (spec.dataFile !== undefined) incompatible |= 4n;
  if (spec.compressionType) incompatible |= 8n;
  let end = 72;
  if (version >= 3) {
    header.writeBigUInt64BE(incompatible, 72);
    header.writeBigUInt64BE(autoclear, 88);
    header.writeUInt32BE(spec.refcountOrder ?? 4, 96);
    header.writeUInt32BE(spec.headerLength ?? 112, 100);
    header[104] = spec.compressionType ?? 0;
    end = 112;
  }
  const exts: Buffer[] = [];
  if (spec.backingFormat !== undefined) exts.push(ext(EXT_BACKING_FORMAT, Buffer.from(spec.backingFormat)));
  if (spec.dataFile !== undefined) exts.push(ext(EXT_DATA_FILE, Buffer.from(spec.dataFile)));
  if (version >= 3) exts.push(Buffer.alloc(8)); // end of extensions
  const extBytes = Buffer.concat(exts);
  extBytes.copy(img, end, 0, Math.min(extBytes.length, cluster - end));
  end += extBytes.length;
  if (spec.backing !== undefined) {
    const name = Buffer.isBuffer(spec.backing) ? spec.backing : Buffer.from(spec.backing);
    name.copy(img, end, 0, Math.min(name.length, Math.max(0, cluster - end)));
    header.writeBigUInt64BE(spec.backingOffset ?? BigInt(end), 8);
    header.writeUInt32BE(spec.backingSize ?? name.length, 16);
  }

  // Refcount table → one block; every cluster of the file has refcount 1 (16-bit entries).
  if (total >= 3 * cluster) {
    img.writeBigUInt64BE(BigInt(2 * cluster), cluster);
    const entries = Math.min(total / cluster, cluster / 2);
    for (let i = 0; i < entries; i++) img.writeUInt16BE(1, 2 * cluster + i * 2);
    // L1[0] → the L2 table (copied flag set: refcount 1).
    if (dataClusters > 0) img.writeBigUInt64BE(BigInt(l2At * cluster) | (1n << 63n), 3 * cluster);
  }
  let compressedAt = (firstData + dataClusters) * cluster;
  for (const [index, bytes] of spec.data ?? []) {
    const host = (firstData + index) * cluster;
    bytes.copy(img, host, 0, Math.min(bytes.length, cluster));
    img.writeBigUInt64BE(BigInt(host) | (1n << 63n), l2At * cluster + index * 8);
  }
  for (const [index, stream] of spec.compressed ?? []) {
    stream.copy(img, compressedAt);
    // Compressed L2 entry: bit 62, host offset in the low (62 - (cluster_bits - 8)) bits, then
    // the number of additional 512-byte sectors the stream covers.
    const offsetBits = 62 - (clusterBits - 8);
    const sectors = BigInt(Math.min(Math.ceil(stream.length / 512) - 1, 2 ** (clusterBits - 8) - 1));
    img.writeBigUInt64BE((1n << 62n) | (sectors << BigInt(offsetBits)) | BigInt(compressedAt), l2At * cluster + index * 8);
    compressedAt += Math.ceil(stream.length / cluster) * cluster;
  }
  return img;
}

/** A deflate stream (qemu's zlib clusters) that inflates to `inflated` bytes of 0x41. */
export function zlibBomb(inflated: number): Buffer {
  return deflateRawSync(Buffer.alloc(inflated, 0x41), { windowBits: 12, level: 9 });
}

/** A zstd frame of RLE blocks (hand-built: 4 bytes per 128 KiB) that decodes to `blocks` × 128 KiB. */
export function zstdBomb(blocks: number): Buffer {
  const frame = Buffer.alloc(6 + blocks * 4);
  frame.writeUInt32LE(0xfd2fb528, 0);
  frame[4] = 0x00; // no content size, not single-segment: a window descriptor follows
  frame[5] = (17 - 10) << 3; // window 128 KiB
  for (let i = 0; i < blocks; i++) {
    const last = i === blocks - 1 ? 1 : 0;
    const header = last | (1 << 1) | (128 * 1024 << 3); // RLE block of 128 KiB
    frame.writeUIntLE(header, 6 + i * 4, 3);
    frame[6 + i * 4 + 3] = 0x42;
  }
  return frame;
}
