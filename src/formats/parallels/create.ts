// `create -f parallels` as qemu's parallels_co_create writes it: the 64-byte header in the first
// sector and a zeroed BAT up to the first data cluster (data_off). Deterministic: no random fields.
import { ImageError, type CreateCapability, type CreateOptionSpec, type CreatePlan } from '../types.ts';

export const PARALLELS_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'cluster_size', type: 'size', help: 'Parallels image cluster size', defaultValue: '1048576' },
];

const SECTOR = 512n;
/** MAX_PARALLELS_IMAGE_FACTOR: a disk holds fewer than 2^32 clusters. */
const IMAGE_FACTOR = 2n ** 32n;
const INT64_MAX = 2n ** 63n - 1n;
const HEADER_BYTES = 64n;

interface ParallelsPlan {
  size: number;
  clusterSize: number;
}

const roundUp = (n: bigint, m: bigint) => ((n + m - 1n) / m) * m;

function plan(options: ReadonlyMap<string, string>, sizeIn: bigint): CreatePlan {
  const size = roundUp(sizeIn, SECTOR) % 2n ** 64n;
  const clusterSize = roundUp(BigInt(options.get('cluster_size') ?? '1048576'), SECTOR) % 2n ** 64n;
  if (clusterSize >= INT64_MAX / IMAGE_FACTOR) throw new ImageError('Cluster size is too large');
  if (size >= IMAGE_FACTOR * clusterSize) throw new ImageError('Image size is too large for this cluster size');
  const p: ParallelsPlan = { size: Number(size), clusterSize: Number(clusterSize) };
  return p as unknown as CreatePlan;
}

export const parallelsCreate: CreateCapability = {
  options: PARALLELS_CREATE_OPTIONS,
  plan,
  layout(raw) {
    const p = raw as unknown as ParallelsPlan;
    const size = BigInt(p.size);
    const cluster = BigInt(p.clusterSize);
    const batEntries = (size + cluster - 1n) / cluster;
    // bat_entry_off() is uint32 arithmetic in qemu: a huge BAT's size wraps (and so does the file).
    const batBytes = BigInt.asUintN(32, HEADER_BYTES + 4n * batEntries);
    const batSectors = (((batBytes + cluster - 1n) / cluster) * cluster) / SECTOR;
    const header = Buffer.alloc(Number(SECTOR));
    header.write('WithouFreSpacExt', 0, 'latin1');
    header.writeUInt32LE(2, 16);
    header.writeUInt32LE(16, 20);
    header.writeUInt32LE(Number(size / SECTOR / 16n / 32n) >>> 0, 24);
    header.writeUInt32LE(Number(cluster / SECTOR) >>> 0, 28);
    header.writeUInt32LE(Number(batEntries) >>> 0, 32);
    header.writeBigUInt64LE((size + SECTOR - 1n) / SECTOR, 36);
    header.writeUInt32LE(Number(batSectors) >>> 0, 48);
    return { image: { length: Number(batSectors * SECTOR), writes: [{ pos: 0, bytes: header }] } };
  },
};
