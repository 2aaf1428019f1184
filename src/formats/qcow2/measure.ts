// qemu's qcow2_measure: the size of a new qcow2 image from its creation options and, when there
// is an input image, from the clusters holding its data (block status over the whole disk).
// Every quantity is a BigInt in the width qemu computes it in; nothing here can wrap silently.
import { ImageError, type MeasureCapability, type MeasureEnvironment, type MeasureInput, type MeasureResult } from '../types.ts';
import { RAW_CREATE_OPTIONS } from '../raw/measure.ts';
import { luksPayloadSize } from '../luks/measure.ts';

/** qemu-img create -f qcow2 -o help (the same in 7.2 and 10.0), the file protocol's included. */
const QCOW2_CREATE_OPTIONS = {
  ...RAW_CREATE_OPTIONS,
  backing_file: 'string', backing_fmt: 'string', cluster_size: 'size', compat: 'string', compression_type: 'string',
  data_file: 'string', data_file_raw: 'bool', 'encrypt.cipher-alg': 'string', 'encrypt.cipher-mode': 'string',
  'encrypt.format': 'string', 'encrypt.hash-alg': 'string', 'encrypt.iter-time': 'number', 'encrypt.ivgen-alg': 'string',
  'encrypt.ivgen-hash-alg': 'string', 'encrypt.key-secret': 'string', encryption: 'bool', extended_l2: 'bool',
  lazy_refcounts: 'bool', refcount_bits: 'number',
} as const;

const MIN_CLUSTER = 512n;
const MAX_CLUSTER = 2n * 1024n * 1024n;
const DEFAULT_CLUSTER = 65536n;
/** QCOW_MAX_L1_SIZE: 32 MiB of L1 entries. */
const MAX_L1_BYTES = 32n * 1024n * 1024n;
const L1E_SIZE = 8n;
const REFTABLE_ENTRY_SIZE = 8n;
const INT64_MAX = 2n ** 63n - 1n;
const UINT64 = 2n ** 64n;

const isPowerOfTwo = (n: bigint) => n > 0n && (n & (n - 1n)) === 0n;
const divRoundUp = (n: bigint, d: bigint) => (n + d - 1n) / d;
const roundUp = (n: bigint, d: bigint) => divRoundUp(n, d) * d;
const log2 = (n: bigint) => n.toString(2).length - 1;

/** The validated geometry of the new image. */
interface Geometry {
  clusterSize: bigint;
  extendedL2: boolean;
  version: 2 | 3;
  refcountOrder: number;
  /** preallocation=full or falloc: every data cluster is written. */
  fullPrealloc: boolean;
  hasBacking: boolean;
  /** The LUKS header (encrypt.format=luks), in whole clusters. */
  luksPayload: bigint;
}

/** Options checked in qcow2_measure's order, with its wording. */
function geometry(options: ReadonlyMap<string, string>, env: MeasureEnvironment): Geometry {
  const extendedL2 = options.get('extended_l2') === 'on';
  const clusterSize = BigInt(options.get('cluster_size') ?? DEFAULT_CLUSTER);
  if (!isPowerOfTwo(clusterSize) || clusterSize < MIN_CLUSTER || clusterSize > MAX_CLUSTER) {
    throw new ImageError('Cluster size must be a power of two between 512 and 2048k');
  }
  if (extendedL2 && clusterSize < 16384n) {
    throw new ImageError('Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  }
  const compat = options.get('compat');
  if (compat !== undefined && compat !== '0.10' && compat !== '1.1') throw new ImageError(`Invalid compatibility level: '${compat}'`);
  const version = compat === '0.10' ? 2 : 3;
  const refcountBits = BigInt(options.get('refcount_bits') ?? '16');
  if (refcountBits > 64n || !isPowerOfTwo(refcountBits)) {
    throw new ImageError('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16n) {
    throw new ImageError('Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
  }
  const prealloc = options.get('preallocation') ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(prealloc)) throw new ImageError(`invalid parameter value: ${prealloc}`);
  // A LUKS header inside the image takes whole clusters.
  const luksBytes = options.get('encrypt.format') === 'luks' ? luksPayloadSize((key) => options.get(`encrypt.${key}`), 'encrypt.', env) : 0n;
  return {
    luksPayload: roundUp(luksBytes, clusterSize),
    clusterSize, extendedL2, version, refcountOrder: log2(refcountBits),
    fullPrealloc: prealloc === 'full' || prealloc === 'falloc',
    hasBacking: options.has('backing_file'),
  };
}


/**
 * qcow2_refcount_metadata_size: refcount blocks and table clusters for `clusters` clusters, found
 * as the fixed point where they also count themselves.
 */
function refcountMetadataSize(clusters: bigint, clusterSize: bigint, refcountOrder: number): bigint {
  const blocksPerTableCluster = clusterSize / REFTABLE_ENTRY_SIZE;
  const refcountsPerBlock = (clusterSize * 8n) / 2n ** BigInt(refcountOrder);
  let table = 0n;
  let blocks = 0n;
  let n = 0n;
  let last: bigint;
  do {
    last = n;
    blocks = divRoundUp(clusters + table + blocks, refcountsPerBlock);
    table = divRoundUp(blocks, blocksPerTableCluster);
    n = clusters + blocks + table;
  } while (n !== last);
  return (blocks + table) * clusterSize;
}

/** qcow2_calc_prealloc_size: header, L1, L2, refcounts and every data cluster (int64 in qemu). */
function preallocSize(totalSize: bigint, g: Geometry): bigint {
  const cs = g.clusterSize;
  const l2eSize = g.extendedL2 ? 16n : 8n;
  const alignedTotal = roundUp(totalSize, cs);
  let meta = cs;
  const nl2e = roundUp(alignedTotal / cs, cs / l2eSize);
  meta += nl2e * l2eSize;
  const nl1e = roundUp((nl2e * l2eSize) / cs, cs / L1E_SIZE);
  meta += nl1e * L1E_SIZE;
  meta += refcountMetadataSize((meta + alignedTotal) / cs, cs, g.refcountOrder);
  return meta + alignedTotal;
}

/** qcow2_get_persistent_dirty_bitmap_size: every bitmap fully allocated, its table, the directory. */
function bitmapsSize(bitmaps: NonNullable<MeasureInput['bitmaps']>, diskSize: bigint, cs: bigint): bigint {
  let size = 0n;
  let directory = 0n;
  for (const b of bitmaps) {
    const bytes = divRoundUp(divRoundUp(diskSize, BigInt(b.granularity)), 8n);
    const clusters = divRoundUp(bytes, cs);
    size += clusters * cs + roundUp(clusters * 8n, cs);
    // A directory entry: 24 bytes and the name, padded to 8.
    directory += roundUp(24n + BigInt(b.nameBytes), 8n);
  }
  return size + roundUp(directory, cs);
}

/** qemu computes in int64 and uint64; a value past them would print wrapped: refuse instead. */
function checked(n: bigint, limit: bigint): bigint {
  if (n < 0n || n > limit) throw new ImageError('The image size is too large (try using a larger cluster size)');
  return n;
}

function measure(options: ReadonlyMap<string, string>, input: MeasureInput | undefined, env: MeasureEnvironment): MeasureResult {
  const g = geometry(options, env);
  const cs = g.clusterSize;
  // The size option (or --size) is checked against the L1 limit even when an input decides the size.
  const optionSize = roundUp(BigInt(options.get('size') ?? '0'), cs) % UINT64;
  const l2Tables = divRoundUp(optionSize / cs, cs / (g.extendedL2 ? 16n : 8n));
  if (l2Tables * L1E_SIZE > MAX_L1_BYTES) throw new ImageError('The image size is too large (try using a larger cluster size)');
  let virtualSize = optionSize;
  let required = 0n;
  if (input) {
    if (input.sizeError !== undefined) throw new ImageError(`Unable to get image virtual_size: ${input.sizeError}`);
    virtualSize = roundUp(input.virtualSize, cs);
    // A new backing file may share nothing with the input: every cluster counts.
    if (g.hasBacking) required = virtualSize;
    else required = input.dataBytes(Number(cs));
  }
  if (g.fullPrealloc) required = virtualSize;
  const fullyAllocated = checked(g.luksPayload + preallocSize(checked(virtualSize, INT64_MAX), g), INT64_MAX);
  const result: MeasureResult = { required: checked(fullyAllocated - virtualSize + required, UINT64 - 1n), fullyAllocated };
  // Only when both the input and the new image can carry persistent bitmaps.
  if (g.version >= 3 && input?.bitmaps) result.bitmaps = checked(bitmapsSize(input.bitmaps, input.virtualSize, cs), UINT64 - 1n);
  return result;
}

export const qcow2Measure: MeasureCapability = { createOptions: () => QCOW2_CREATE_OPTIONS, measure };
