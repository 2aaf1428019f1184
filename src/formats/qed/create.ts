// `create -f qed` as qemu's bdrv_qed_co_create writes it: the header cluster (little-endian fields,
// the backing file name right after the fixed header) and a zeroed L1 table. Deterministic.
import { ImageError, type CreateCapability, type CreateOptionSpec, type CreatePlan } from '../types.ts';

export const QED_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: 'Image format of the base image' },
  { name: 'cluster_size', type: 'size', help: 'Cluster size (in bytes)', defaultValue: '65536' },
  { name: 'table_size', type: 'size', help: 'L1/L2 table size (in clusters)' },
];

const MIN_CLUSTER = 4096n;
const MAX_CLUSTER = 64n * 1024n * 1024n;
const HEADER_BYTES = 64;
const FEATURE_BACKING = 1n;
const FEATURE_BACKING_NO_PROBE = 4n;

interface QedPlan {
  size: number;
  clusterSize: number;
  tableSize: number;
  backingFile?: string;
  rawBacking: boolean;
}

const isPowerOfTwo = (n: bigint) => n > 0n && (n & (n - 1n)) === 0n;

function plan(options: ReadonlyMap<string, string>, sizeIn: bigint): CreatePlan {
  const size = (((sizeIn + 511n) / 512n) * 512n) % 2n ** 64n;
  const clusterSize = BigInt(options.get('cluster_size') ?? '65536');
  const tableSize = BigInt(options.get('table_size') ?? '4');
  if (!isPowerOfTwo(clusterSize) || clusterSize < MIN_CLUSTER || clusterSize > MAX_CLUSTER) {
    throw new ImageError(`QED cluster size must be within range [${MIN_CLUSTER}, ${MAX_CLUSTER}] and power of 2`);
  }
  if (!isPowerOfTwo(tableSize) || tableSize > 16n) throw new ImageError('QED table size must be within range [1, 16] and power of 2');
  // qemu's max_image_size in uint64 (it wraps to 0 for the largest clusters and tables).
  const entries = (tableSize * clusterSize) / 8n;
  const max = BigInt.asUintN(64, entries * clusterSize * entries);
  if (size % 512n !== 0n || size > max) {
    throw new ImageError(`QED image size must be a non-zero multiple of cluster size and less than ${max} bytes`);
  }
  const backingFile = options.get('backing_file');
  if (backingFile !== undefined && HEADER_BYTES + Buffer.byteLength(backingFile) > Number(clusterSize)) {
    throw new ImageError('instar cannot create a QED image whose backing file name does not fit its header cluster; nothing was written');
  }
  const p: QedPlan = { size: Number(size), clusterSize: Number(clusterSize), tableSize: Number(tableSize), backingFile, rawBacking: options.get('backing_fmt') === 'raw' };
  return p as unknown as CreatePlan;
}

export const qedCreate: CreateCapability = {
  options: QED_CREATE_OPTIONS,
  plan,
  layout(raw) {
    const p = raw as unknown as QedPlan;
    const header = Buffer.alloc(HEADER_BYTES + (p.backingFile === undefined ? 0 : Buffer.byteLength(p.backingFile)));
    header.write('QED\0', 0, 'latin1');
    header.writeUInt32LE(p.clusterSize, 4);
    header.writeUInt32LE(p.tableSize, 8);
    header.writeUInt32LE(1, 12);
    let features = 0n;
    if (p.backingFile !== undefined) {
      features |= FEATURE_BACKING | (p.rawBacking ? FEATURE_BACKING_NO_PROBE : 0n);
      header.writeUInt32LE(HEADER_BYTES, 56);
      header.writeUInt32LE(Buffer.byteLength(p.backingFile), 60);
      header.write(p.backingFile, HEADER_BYTES);
    }
    header.writeBigUInt64LE(features, 16);
    header.writeBigUInt64LE(BigInt(p.clusterSize), 40);
    header.writeBigUInt64LE(BigInt(p.size), 48);
    const l1Bytes = p.tableSize * p.clusterSize;
    // qemu writes the empty L1 table out (allocated, as in its file).
    return { image: { length: p.clusterSize + l1Bytes, writes: [{ pos: 0, bytes: header }, { pos: p.clusterSize, bytes: new Uint8Array(l1Bytes) }] } };
  },
};
