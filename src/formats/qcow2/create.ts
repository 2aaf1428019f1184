// `create -f qcow2`, laid out as qemu's qcow2_co_create leaves the file (byte for byte): the
// header cluster (rewritten by qcow2_update_header with its extensions), a refcount table and
// one refcount block, the L1 table right after them (written only as far as its entries reach),
// with preallocation=metadata each L2 table followed by the data clusters it maps, and with
// falloc/full a new refcount area, the data and then the L2 tables (qemu's truncate path). Pure: the
// options in, the bytes out.
import { ImageError, type CreateCapability, type CreateEnvironment, type CreateFileLayout, type CreateOptionSpec, type CreatePlan } from '../types.ts';
import { luksHeaderWrites, luksPlan, masterKeys, type LuksPlan } from '../luks/create.ts';
import { PREALLOC_MODES } from '../raw/create.ts';
import { CreateAllocator } from './create-allocator.ts';
import { HeaderSpaceError, serializeHeader } from './header-write.ts';

/** qcow2's create options in qemu's QemuOptsList order (what "Formatting ..." follows). */
export const QCOW2_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  { name: 'encryption', type: 'bool', help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
  { name: 'encrypt.format', type: 'string', help: "Encrypt the image, format choices: 'aes', 'luks'" },
  { name: 'encrypt.key-secret', type: 'string', help: 'ID of secret providing qcow AES key or LUKS passphrase' },
  { name: 'encrypt.cipher-alg', type: 'string', help: 'Name of encryption cipher algorithm' },
  { name: 'encrypt.cipher-mode', type: 'string', help: 'Name of encryption cipher mode' },
  { name: 'encrypt.ivgen-alg', type: 'string', help: 'Name of IV generator algorithm' },
  { name: 'encrypt.ivgen-hash-alg', type: 'string', help: 'Name of IV generator hash algorithm' },
  { name: 'encrypt.hash-alg', type: 'string', help: 'Name of encryption hash algorithm' },
  { name: 'encrypt.iter-time', type: 'number', help: 'Time to spend in PBKDF in milliseconds' },
  { name: 'cluster_size', type: 'size', help: 'qcow2 cluster size', defaultValue: '65536' },
  { name: 'extended_l2', type: 'bool', help: 'Extended L2 tables', defaultValue: 'off' },
  { name: 'preallocation', type: 'string', help: 'Preallocation mode (allowed values: off, metadata, falloc, full)' },
  { name: 'compression_type', type: 'string', help: 'Compression method used for image cluster compression', defaultValue: 'zlib' },
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'compat', type: 'string', help: 'Compatibility level (v2 [0.10] or v3 [1.1])' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: 'Image format of the base image' },
  { name: 'data_file', type: 'string', help: 'File name of an external data file' },
  { name: 'data_file_raw', type: 'bool', help: 'The external data file must stay valid as a raw image' },
  { name: 'lazy_refcounts', type: 'bool', help: 'Postpone refcount updates', defaultValue: 'off' },
  { name: 'refcount_bits', type: 'number', help: 'Width of a reference count entry in bits', defaultValue: '16' },
];

/** qemu's BlockdevDriver enum: what backing_fmt may name once the backing file is not opened (-u). */
const BLOCKDEV_DRIVERS = new Set(['blkdebug', 'blklogwrites', 'blkreplay', 'blkverify', 'bochs', 'cloop', 'compress',
  'copy-before-write', 'copy-on-read', 'dmg', 'file', 'snapshot-access', 'ftp', 'ftps', 'gluster', 'host_cdrom',
  'host_device', 'http', 'https', 'io_uring', 'iscsi', 'luks', 'nbd', 'nfs', 'null-aio', 'null-co', 'nvme',
  'nvme-io_uring', 'parallels', 'preallocate', 'qcow', 'qcow2', 'qed', 'quorum', 'raw', 'rbd', 'replication', 'ssh',
  'throttle', 'vdi', 'vhdx', 'virtio-blk-vfio-pci', 'virtio-blk-vhost-user', 'virtio-blk-vhost-vdpa', 'vmdk', 'vpc', 'vvfat']);

const MAX_L1_BYTES = 32 * 1024 * 1024;
const COPIED = 2n ** 63n;

/** The checked geometry of the new image (JSON: it travels to the guest). */
export interface Qcow2Plan {
  version: 2 | 3;
  clusterBits: number;
  refcountOrder: number;
  /** The virtual size in bytes, rounded up to a sector. */
  size: number;
  extendedL2: boolean;
  lazyRefcounts: boolean;
  zstd: boolean;
  metadata: boolean;
  /** preallocation=falloc/full: every data cluster allocated (and written as zeros). */
  full: boolean;
  /** preallocation=falloc (qemu's words differ when the disk is too small). */
  falloc?: boolean;
  dataFile?: string;
  dataFileRaw: boolean;
  backingFile?: string;
  backingFmt?: string;
  /** encrypt.format=luks: the LUKS volume's plan; its header and key slots fill the crypto header area. */
  luks?: Omit<LuksPlan, 'allocate'>;
  /** encrypt.format=aes (crypt method 1): the AES-128 key, hex (writer-encrypt.ts). */
  aes?: { key: string };
}

/** The LUKS-only encrypt.* options, which qemu's AES (qcow) options do not take. */
const LUKS_ONLY = ['cipher-alg', 'cipher-mode', 'ivgen-alg', 'ivgen-hash-alg', 'hash-alg', 'iter-time'];

/** encrypt.format=aes: its one option, the secret, whose first 16 bytes (as a C string, zero-padded) are the key. */
function aesPlan(options: ReadonlyMap<string, string>, env: CreateEnvironment): { key: string } {
  const extra = LUKS_ONLY.find((k) => options.has(`encrypt.${k}`));
  if (extra) fail(`Parameter 'encrypt.${extra}' is unexpected`);
  const id = options.get('encrypt.key-secret');
  if (id === undefined) fail("Parameter 'encrypt.key-secret' is required for cipher");
  const secret = env.secrets?.get(id!);
  if (secret === undefined) fail(`No secret with id '${id}'`);
  const nul = secret!.indexOf(0);
  const key = Buffer.alloc(16);
  key.set((nul < 0 ? secret! : secret!.subarray(0, nul)).subarray(0, 16));
  return { key: key.toString('hex') };
}

const fail = (text: string): never => {
  throw new ImageError(text);
};
const V3_HINT = '(use version=v3 or greater)';
const isPowerOfTwo = (n: bigint) => n > 0n && (n & (n - 1n)) === 0n;

/** qcow2_co_create_opts's QAPI conversion (in BlockdevCreateOptionsQcow2's field order), then qcow2_co_create's checks. */
function plan(options: ReadonlyMap<string, string>, size: bigint, env?: CreateEnvironment): CreatePlan {
  // encryption=on is the deprecated alias of encrypt.format=aes.
  if (options.get('encryption') === 'on' && options.has('encrypt.format')) fail("'encrypt.format' and its alias 'encryption' can't be used at the same time");
  const cryptFormat = options.get('encryption') === 'on' ? 'aes' : options.get('encrypt.format');
  const encryption = cryptFormat !== undefined;
  // LUKS and AES, where the host hands over the --object secrets.
  if (encryption && cryptFormat !== 'luks' && cryptFormat !== 'aes') fail(`instar creates encrypted qcow2 images only with encrypt.format=luks or aes (not ${cryptFormat}); nothing was written`);
  if (encryption && env?.secrets === undefined) fail('instar cannot write encrypted qcow2 images here; nothing was written');
  const dataFile = options.get('data_file');
  const dataFileRaw = options.get('data_file_raw') === 'on';
  const extendedL2 = options.get('extended_l2') === 'on';
  const compat = options.get('compat');
  const versions: Record<string, 2 | 3> = { '0.10': 2, v2: 2, '1.1': 3, v3: 3 };
  if (compat !== undefined && versions[compat] === undefined) fail(`Parameter 'version' does not accept value '${compat}'`);
  const version = compat === undefined ? 3 : versions[compat];
  const backingFile = options.get('backing_file');
  const backingFmt = options.get('backing_fmt');
  if (backingFmt !== undefined && !BLOCKDEV_DRIVERS.has(backingFmt)) fail(`Parameter 'backing-fmt' does not accept value '${backingFmt}'`);
  const prealloc = options.get('preallocation');
  if (prealloc !== undefined && !PREALLOC_MODES.includes(prealloc)) fail(`Parameter 'preallocation' does not accept value '${prealloc}'`);
  const compression = options.get('compression_type') ?? 'zlib';
  if (compression !== 'zlib' && compression !== 'zstd') fail(`Parameter 'compression-type' does not accept value '${compression}'`);
  // The size was rounded up to a sector in uint64; qemu then reads it as int64.
  const rounded = BigInt.asIntN(64, (((size + 511n) / 512n) * 512n) % 2n ** 64n);

  if (extendedL2 && version < 3) fail(`Extended L2 entries are only supported with compatibility level 1.1 and above ${V3_HINT}`);
  const clusterSize = BigInt(options.get('cluster_size') ?? '65536');
  if (!isPowerOfTwo(clusterSize) || clusterSize < 512n || clusterSize > 2n * 1024n * 1024n) fail('Cluster size must be a power of two between 512 and 2048k');
  if (extendedL2 && clusterSize < 16384n) fail('Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  let mode = prealloc ?? 'off';
  if (backingFile !== undefined && mode !== 'off' && !extendedL2) fail('Backing file and preallocation can only be used at the same time if extended_l2 is on');
  if (backingFmt !== undefined && backingFile === undefined) fail('Backing format cannot be used without backing file');
  const lazyRefcounts = options.get('lazy_refcounts') === 'on';
  if (version < 3 && lazyRefcounts) fail(`Lazy refcounts only supported with compatibility level 1.1 and above ${V3_HINT}`);
  const refcountBits = BigInt(options.get('refcount_bits') ?? '16');
  if (refcountBits > 64n || !isPowerOfTwo(refcountBits)) fail('Refcount width must be a power of two and may not exceed 64 bits');
  if (version < 3 && refcountBits !== 16n) fail(`Different refcount widths than 16 bits require compatibility level 1.1 or above ${V3_HINT}`);
  if (dataFileRaw && dataFile === undefined) fail('data-file-raw requires data-file');
  if (dataFileRaw && backingFile !== undefined) fail('Backing file and data-file-raw cannot be used at the same time');
  if (dataFileRaw && mode === 'off') mode = 'metadata';
  if (dataFile !== undefined && version < 3) fail(`External data files are only supported with compatibility level 1.1 and above ${V3_HINT}`);
  if (compression !== 'zlib' && version < 3) fail(`Non-zlib compression type is only supported with compatibility level 1.1 and above ${V3_HINT}`);

  // What happens once the file exists: the resize to the virtual size.
  if (rounded < 0n) fail('Could not resize image: Image size cannot be negative');
  const p: Qcow2Plan = {
    version, clusterBits: clusterSize.toString(2).length - 1, refcountOrder: refcountBits.toString(2).length - 1,
    size: 0, extendedL2, lazyRefcounts, zstd: compression === 'zstd', metadata: mode === 'metadata', full: mode === 'falloc' || mode === 'full', falloc: mode === 'falloc',
    dataFile, dataFileRaw, backingFile, backingFmt,
  };
  const l1Entries = divCeil(divCeil(rounded, clusterSize), clusterSize / (extendedL2 ? 16n : 8n));
  if (l1Entries * 8n > BigInt(MAX_L1_BYTES)) throw new ImageError('Failed to grow the L1 table: File too large', 'EFBIG');
  // With a data file, falloc/full preallocate the metadata and forward the mode to the data file.
  if (p.full && dataFile !== undefined) p.metadata = true;
  if (!Number.isSafeInteger(Number(rounded))) fail('instar cannot create a qcow2 image of 2^53 bytes or more; nothing was written');
  p.size = Number(rounded);
  // qcow2_set_up_encryption runs after the image has its size: the LUKS checks come last.
  if (cryptFormat === 'luks') p.luks = luksPlan((key) => options.get(`encrypt.${key}`), 'encrypt.', BigInt(p.size), env);
  if (cryptFormat === 'aes') p.aes = aesPlan(options, env!);
  geometry(p);
  return p as unknown as CreatePlan;
}

const divCeil = (n: bigint, d: bigint) => (n + d - 1n) / d;

export interface Geometry {
  cs: number;
  l1Size: number;
  l1Offset: number;
  /** Host cluster index of each L2 table (metadata preallocation). */
  l2Clusters: number[];
  /** Where the data clusters went: [first guest cluster, first host cluster, count] (in the qcow2 file itself). */
  dataRuns: [number, number, number][];
  allocator: CreateAllocator;
  /** The refcount table entries written at cluster 1 before falloc/full moved the table. */
  oldTable?: number[];
  /** Where the file ends before the L2 tables of falloc/full (the data area's end), in bytes. */
  dataAreaEnd: number;
  l2Entries: number;
  guestClusters: number;
  /** Where the LUKS header area starts (encrypt.format=luks), else 0. */
  cryptoOffset: number;
  /** falloc/full: the file's length when qemu's truncate preallocates the rest, in bytes. */
  preallocFrom?: number;
}

/** Most bytes preallocate_co asks qemu's allocator for at once: INT_MAX, aligned down to a cluster. */
const CHUNK_BYTES = 2 ** 31 - 1;

/** Where everything goes: the clusters qemu's allocator hands out, in its order. */
export function geometry(p: Qcow2Plan): Geometry {
  const cs = 2 ** p.clusterBits;
  const l2Entries = cs / (p.extendedL2 ? 16 : 8);
  const guestClusters = Math.ceil(p.size / cs);
  const l1Size = Math.ceil(guestClusters / l2Entries);
  // qcow2_co_create writes the header, a refcount table and an empty block, then allocates all three.
  const allocator = new CreateAllocator(cs, p.refcountOrder, 2);
  allocator.alloc(3 * cs);
  const l1Offset = l1Size > 0 ? allocator.alloc(l1Size * 8) * cs : 0;
  const l2Clusters: number[] = [];
  const dataRuns: [number, number, number][] = [];
  let oldTable: number[] | undefined;
  let dataAreaEnd = 0;
  let preallocFrom: number | undefined;
  if (p.full && p.dataFile === undefined) {
    // qcow2_co_truncate's falloc/full path: a refcount area at the end of the file covering the
    // data and its L2 tables, the data right after it, then the L2 tables from the free clusters
    // (the first one where the old refcount table was).
    const blocksEnd = Math.max(0, ...allocator.blocks().map(([, block]) => block + 1));
    const fileEnd = Math.max(3, Math.ceil((l1Offset + l1Size * 8) / cs), blocksEnd);
    preallocFrom = fileEnd * cs;
    const start = allocator.lastUsed(fileEnd) + 1;
    const l2Tables = Math.ceil(guestClusters / l2Entries) + 1;
    oldTable = [...allocator.table];
    const dataStart = allocator.refcountArea(start, guestClusters + l2Tables);
    allocator.allocAt(dataStart, guestClusters);
    if (guestClusters > 0) dataRuns.push([0, dataStart, guestClusters]);
    dataAreaEnd = (dataStart + guestClusters) * cs;
    for (let i = 0; i < l1Size; i++) l2Clusters.push(allocator.alloc(cs));
  } else if (p.metadata) {
    const chunk = Math.floor(CHUNK_BYTES / cs);
    for (let i = 0; i < l1Size; i++) {
      l2Clusters.push(allocator.alloc(cs));
      // With an external data file the data lives there, at the guest offset: nothing to allocate.
      if (p.dataFile !== undefined) continue;
      const end = Math.min((i + 1) * l2Entries, guestClusters);
      for (let guest = i * l2Entries; guest < end;) {
        const count = Math.min(chunk, end - guest);
        dataRuns.push([guest, allocator.alloc(count * cs), count]);
        guest += count;
      }
    }
  }
  // encrypt.format=luks: qcow2_co_create sets up encryption once the image has its size (and its
  // preallocation): the crypto header area (qcow2_crypto_hdr_init_func) is allocated last.
  const cryptoOffset = p.luks ? allocator.alloc(p.luks.payload) * cs : 0;
  return { cs, l1Size, l1Offset, l2Clusters, dataRuns, allocator, oldTable, dataAreaEnd, l2Entries, guestClusters, cryptoOffset, preallocFrom };
}

/** The header cluster as qcow2_update_header writes it last (the shared serializer). */
function headerCluster(p: Qcow2Plan, g: Geometry): Uint8Array {
  try {
    return serializeHeader({
      version: p.version, clusterBits: p.clusterBits, size: BigInt(p.size), cryptMethod: p.luks ? 2 : p.aes ? 1 : 0,
      crypto: p.luks ? { offset: BigInt(g.cryptoOffset), length: BigInt(p.luks.payload) } : undefined,
      l1Size: g.l1Size, l1TableOffset: BigInt(g.l1Offset),
      refcountTableOffset: BigInt(g.allocator.tableCluster * g.cs), refcountTableClusters: g.allocator.tableClusters,
      nbSnapshots: 0, snapshotsOffset: 0n,
      incompatible: (p.dataFile !== undefined ? 4n : 0n) | (p.zstd ? 8n : 0n) | (p.extendedL2 ? 16n : 0n),
      compatible: p.lazyRefcounts ? 1n : 0n, autoclear: p.dataFileRaw ? 2n : 0n,
      refcountOrder: p.refcountOrder, compressionType: p.zstd ? 1 : 0, unknownHeaderFields: new Uint8Array(0),
      backingFormat: p.backingFmt !== undefined && p.backingFile !== undefined ? Buffer.from(p.backingFmt) : undefined,
      dataFile: p.dataFile === undefined ? undefined : Buffer.from(p.dataFile),
      unknownExtensions: [],
      backingFile: p.backingFile === undefined ? undefined : Buffer.from(p.backingFile),
    });
  } catch (e) {
    if (!(e instanceof HeaderSpaceError)) throw e;
    return fail(`Could not assign backing file '${p.backingFile}' with format '${p.backingFmt}': No space left on device`);
  }
}

/** A refcount block's bytes: 2^order-bit entries (below a byte: lowest bits first; else big-endian). */
export function refcountBlock(g: Geometry, order: number, tableIndex: number): Uint8Array {
  const block = new Uint8Array(g.cs);
  const bits = 2 ** order;
  const first = tableIndex * g.allocator.perBlock;
  for (let i = 0; i < g.allocator.perBlock; i++) {
    const value = g.allocator.refcounts[first + i] ?? 0;
    if (value === 0) continue;
    if (bits >= 8) {
      const bytes = bits / 8;
      for (let b = 0; b < bytes && b < 4; b++) block[(i + 1) * bytes - 1 - b] = (value >>> (8 * b)) & 0xff;
    } else {
      const perByte = 8 / bits;
      block[Math.floor(i / perByte)] |= value << ((i % perByte) * bits);
    }
  }
  return block;
}

function layout(raw: CreatePlan): { image: CreateFileLayout; dataFile?: CreateFileLayout } {
  const p = raw as unknown as Qcow2Plan;
  const g = geometry(p);
  const cs = g.cs;
  const writes: CreateFileLayout['writes'] = [{ pos: 0, bytes: headerCluster(p, g) }];
  const tableBytes = (entries: number[], clusters: number) => {
    const table = new Uint8Array(clusters * cs);
    const view = new DataView(table.buffer);
    entries.forEach((block, i) => block !== 0 && view.setBigUint64(i * 8, BigInt(block * cs)));
    return table;
  };
  // A table that falloc/full replaced stays where it was until an L2 table takes the cluster.
  if (g.oldTable) writes.push({ pos: cs, bytes: tableBytes(g.oldTable, 1) });
  // Tables a growth replaced (create-allocator.ts growTable) keep what qemu wrote into them.
  for (const t of g.allocator.retired) writes.push({ pos: t.cluster * cs, bytes: tableBytes(t.entries, t.clusters) });
  const tableAt = g.allocator.tableCluster;
  writes.push({ pos: tableAt * cs, bytes: tableBytes(g.allocator.table, g.allocator.tableClusters) });
  let end = Math.max(3 * cs, g.dataAreaEnd, (tableAt + g.allocator.tableClusters) * cs);
  for (const [index, block] of g.allocator.blocks()) {
    writes.push({ pos: block * cs, bytes: refcountBlock(g, p.refcountOrder, index) });
    end = Math.max(end, (block + 1) * cs);
  }
  // Host cluster of each guest cluster (metadata preallocation), from the allocator's runs.
  const hostCluster = (guest: number): number => {
    if (p.dataFile !== undefined) return guest;
    const run = g.dataRuns.find(([first, , count]) => guest >= first && guest < first + count)!;
    return run[1] + guest - run[0];
  };
  const l1 = new Uint8Array(g.l1Size * 8);
  const l1View = new DataView(l1.buffer);
  const entrySize = p.extendedL2 ? 16 : 8;
  g.l2Clusters.forEach((l2Cluster, i) => {
    l1View.setBigUint64(i * 8, BigInt(l2Cluster * cs) | COPIED);
    const table = new Uint8Array(cs);
    const view = new DataView(table.buffer);
    const count = Math.min(g.l2Entries, g.guestClusters - i * g.l2Entries);
    for (let j = 0; j < count; j++) view.setBigUint64(j * entrySize, BigInt(hostCluster(i * g.l2Entries + j)) * BigInt(cs) | COPIED);
    writes.push({ pos: l2Cluster * cs, bytes: table });
    end = Math.max(end, (l2Cluster + 1) * cs);
  });
  if (p.luks) {
    // qcow2_crypto_hdr_init_func zeroes the area's clusters first (qemu's write_zeroes allocates them).
    writes.push({ pos: g.cryptoOffset, bytes: new Uint8Array(Math.ceil(p.luks.payload / cs) * cs) });
    const header = luksHeaderWrites(p.luks, g.cryptoOffset);
    writes.push(...header.writes);
    // The payload key, for the encrypting writer opened right after (writer-encrypt.ts).
    masterKeys.set(raw, header.masterKey);
    end = Math.max(end, Math.ceil((g.cryptoOffset + p.luks.payload) / cs) * cs);
  }
  if (g.l1Size > 0) {
    writes.push({ pos: g.l1Offset, bytes: l1 });
    end = Math.max(end, g.l1Offset + l1.length);
  }
  // qemu extends the file (or the data file) to the last allocated subcluster of the disk.
  let dataEnd = 0;
  if (p.metadata && g.guestClusters > 0) {
    const subcluster = p.extendedL2 ? cs / 32 : cs;
    const lastGuest = (g.guestClusters - 1) * cs;
    dataEnd = hostCluster(g.guestClusters - 1) * cs + Math.ceil((p.size - lastGuest) / subcluster) * subcluster;
  }
  if (p.dataFile === undefined) end = Math.max(end, dataEnd);
  const image: CreateFileLayout = { length: end, writes, allocate: p.full && p.dataFile === undefined };
  // qemu preallocates from where its create left the file (the L1 table's last cluster): before
  // that only its writes allocate, so the L1 cluster's tail past the table stays a hole.
  if (image.allocate && g.preallocFrom !== undefined) {
    const from = Math.min(g.preallocFrom, end);
    image.allocateRanges = [[0, Math.min(3 * g.cs, end)]];
    // falloc reserves the rest (a 1 TiB image in a moment, as qemu's); full writes its zeros.
    if (p.falloc) image.reserve = [from, end];
    else image.allocateRanges.push([from, end]);
  }
  if (p.dataFile === undefined) return { image };
  return { image, dataFile: { length: p.metadata ? Math.max(p.size, dataEnd) : p.size, writes: [], allocate: p.full } };
}

export const qcow2Create: CreateCapability = { options: QCOW2_CREATE_OPTIONS, plan, layout };
