// `create -f vmdk` as qemu's vmdk_co_do_create writes it: a sparse extent is a header, the
// redundant and the main grain directory with zeroed grain tables; monolithicSparse and
// streamOptimized keep the descriptor at sector 1 of their one extent, the other subformats write
// it alone into the named file, with the extents (flat, or split at 2 GiB) in files of their own
// named after it. The descriptor's CID is random in qemu; here it is an input (the host draws
// it), so the layout stays pure; so is the backing file's CID, which the host's guest reads.
import { ImageError, type CreateCapability, type CreateEnvironment, type CreateOptionSpec, type CreatePlan } from '../types.ts';

export const VMDK_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'adapter_type', type: 'string', help: 'Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: "Must be 'vmdk' if present" },
  { name: 'compat6', type: 'bool', help: 'VMDK version 6 image', defaultValue: 'off' },
  { name: 'hwversion', type: 'string', help: 'VMDK hardware version', defaultValue: 'undefined' },
  { name: 'toolsversion', type: 'string', help: 'VMware guest tools version' },
  {
    name: 'subformat', type: 'string',
    help: 'VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} ',
  },
  { name: 'zeroed_grain', type: 'bool', help: 'Enable efficient zero writes using the zeroed-grain GTE feature' },
];

const ADAPTERS = ['ide', 'buslogic', 'lsilogic', 'legacyESX'];
const SUBFORMATS = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized'];
const SECTOR = 512;
const GRANULARITY = 128;
const GTES_PER_GT = 512;
const DESC_SIZE = 20;

export interface VmdkPlan {
  /** Bytes (a multiple of 512). */
  size: number;
  /** Paths of the extent files (flat and split subformats), as qemu names them. */
  extentFiles: string[];
  subformat: string;
  adapter: string;
  hwVersion: string;
  toolsVersion: string;
  zeroedGrain: boolean;
  /** The extent's file name as the descriptor names it (the basename). */
  extentName: string;
  cid: number;
  parentCid: number;
  backingFile?: string;
}

/** vmdk_co_create_opts and vmdk_co_do_create's checks, in their order. */
function plan(options: ReadonlyMap<string, string>, size: bigint, env?: CreateEnvironment): CreatePlan {
  const rounded = BigInt.asIntN(64, (((size + 511n) / 512n) * 512n) % 2n ** 64n);
  const backingFmt = options.get('backing_fmt');
  if (backingFmt !== undefined && backingFmt !== 'vmdk') throw new ImageError('backing_file must be a vmdk image');
  let hwVersion = options.get('hwversion');
  if (hwVersion === 'undefined') hwVersion = undefined;
  const adapter = options.get('adapter_type') ?? 'ide';
  if (!ADAPTERS.includes(adapter)) throw new ImageError(`invalid parameter value: ${adapter}`);
  const subformat = options.get('subformat') ?? 'monolithicSparse';
  if (!SUBFORMATS.includes(subformat)) throw new ImageError(`invalid parameter value: ${subformat}`);
  if (options.get('compat6') === 'on') {
    if (hwVersion !== undefined) throw new ImageError('compat6 cannot be enabled with hwversion set');
    hwVersion = '6';
  }
  const flat = subformat === 'monolithicFlat' || subformat === 'twoGbMaxExtentFlat';
  const zeroedGrain = options.get('zeroed_grain') === 'on';
  if (flat && options.has('backing_file')) throw new ImageError("Flat image can't have backing file");
  if (flat && zeroedGrain) throw new ImageError("Flat image can't enable zeroed grain");
  const backing = options.get('backing_file');
  if (backing !== undefined && env?.parentCid === undefined) throw new ImageError('Failed to read parent CID');
  if (rounded < 0n || !Number.isSafeInteger(Number(rounded))) throw new ImageError('instar cannot create a VMDK image of this size; nothing was written');
  const name = env?.filename ?? '';
  const split = subformat.startsWith('twoGb');
  const single = subformat === 'monolithicSparse' || subformat === 'streamOptimized';
  const extentSize = split ? SPLIT_SIZE : Number(rounded);
  const extentFiles: string[] = [];
  for (let done = 0, idx = 1; !single && done < Number(rounded); done += extentSize, idx++) extentFiles.push(extentPath(name, idx, flat, split));
  const p: VmdkPlan = {
    size: Number(rounded), extentFiles, subformat, adapter, hwVersion: hwVersion ?? '4', toolsVersion: options.get('toolsversion') ?? '2147483647',
    zeroedGrain, extentName: basename(name),
    cid: env ? Buffer.from(env.randomBytes(4)).readUInt32BE(0) : 0,
    parentCid: backing === undefined ? 0xffffffff : env!.parentCid!, backingFile: backing,
  };
  return p as unknown as CreatePlan;
}

/** Extents of split subformats hold 2 GiB at most. */
export const SPLIT_SIZE = 0x80000000;

/** g_path_get_basename, for the names qemu writes into extent lines. */
const basename = (path: string) => path.slice(path.lastIndexOf('/') + 1);

/** vmdk_co_create_opts_cb's names: "<path><prefix>-flat<postfix>" or "<path><prefix>-f001<postfix>". */
function extentPath(filename: string, idx: number, flat: boolean, split: boolean): string {
  let cut = filename.lastIndexOf('/');
  if (cut < 0) cut = filename.lastIndexOf('\\');
  if (cut < 0) cut = filename.lastIndexOf(':');
  const path = filename.slice(0, cut + 1);
  const rest = filename.slice(cut + 1);
  const dot = rest.lastIndexOf('.');
  const [prefix, postfix] = dot < 0 ? [rest, ''] : [rest.slice(0, dot), rest.slice(dot)];
  return split ? `${path}${prefix}-${flat ? 'f' : 's'}${String(idx).padStart(3, '0')}${postfix}` : `${path}${prefix}-flat${postfix}`;
}

/** The descriptor text (qemu's template, printf'd). */
export function descriptor(p: VmdkPlan): string {
  const heads = p.adapter === 'ide' ? 16 : 255;
  const cylinders = Math.floor(p.size / (63 * heads * SECTOR));
  const flat = p.subformat.endsWith('Flat');
  const single = p.subformat === 'monolithicSparse' || p.subformat === 'streamOptimized';
  const extentBytes = p.subformat.startsWith('twoGb') ? SPLIT_SIZE : p.size;
  const extents: (readonly [number, string])[] = single
    ? [[p.size, p.extentName]]
    : p.extentFiles.map((f, i) => [Math.min(extentBytes, p.size - i * extentBytes), basename(f)]);
  const lines = extents.map(([bytes, name]) => (flat ? `RW ${Math.ceil(bytes / SECTOR)} FLAT "${name}" 0\n` : `RW ${Math.ceil(bytes / SECTOR)} SPARSE "${name}"\n`)).join('');
  return '# Disk DescriptorFile\nversion=1\n' +
    `CID=${p.cid.toString(16)}\nparentCID=${p.parentCid.toString(16)}\ncreateType="${p.subformat}"\n` +
    `${p.backingFile === undefined ? '' : `parentFileNameHint="${p.backingFile}"`}\n` +
    `# Extent description\n${lines}\n` +
    '# The Disk Data Base\n#DDB\n\n' +
    `ddb.virtualHWVersion = "${p.hwVersion}"\nddb.geometry.cylinders = "${cylinders}"\nddb.geometry.heads = "${heads}"\n` +
    `ddb.geometry.sectors = "63"\nddb.adapterType = "${p.adapter}"\nddb.toolsVersion = "${p.toolsVersion}"\n`;
}

/** Where vmdk_init_extent puts a sparse extent's tables (in sectors): the writer needs them too. */
export interface SparseGeometry {
  capacity: number;
  gtSectors: number;
  gtCount: number;
  gdSectors: number;
  rgdOffset: number;
  gdOffset: number;
  grainOffset: number;
}

/** The tables of a sparse extent of `bytes` (a multiple of 512), as vmdk_init_extent lays them out. */
export function sparseGeometry(bytes: number): SparseGeometry {
  const capacity = bytes / SECTOR;
  const grains = Math.ceil(capacity / GRANULARITY);
  const gtSectors = Math.ceil((GTES_PER_GT * 4) / SECTOR);
  const gtCount = Math.ceil(grains / GTES_PER_GT);
  const gdSectors = Math.ceil((gtCount * 4) / SECTOR);
  const rgdOffset = 1 + DESC_SIZE;
  const gdOffset = rgdOffset + gdSectors + gtSectors * gtCount;
  const grainOffset = Math.ceil((gdOffset + gdSectors + gtSectors * gtCount) / GRANULARITY) * GRANULARITY;
  return { capacity, gtSectors, gtCount, gdSectors, rgdOffset, gdOffset, grainOffset };
}

/** vmdk_init_extent for a sparse extent of `bytes`: its header and grain directories, and its length. */
function sparseExtent(bytes: number, compress: boolean, zeroedGrain: boolean): { length: number; writes: { pos: number; bytes: Uint8Array }[] } {
  const { capacity, gtSectors, gtCount, gdSectors, rgdOffset, gdOffset, grainOffset } = sparseGeometry(bytes);
  const header = Buffer.alloc(79);
  header.write('KDMV', 0, 'latin1');
  header.writeUInt32LE(compress ? 3 : zeroedGrain ? 2 : 1, 4);
  // NL detect, redundant grain directory, zeroed grains, compression and markers.
  header.writeUInt32LE(3 | (compress ? 0x30000 : 0) | (zeroedGrain ? 4 : 0), 8);
  header.writeBigUInt64LE(BigInt(capacity), 12);
  header.writeBigUInt64LE(BigInt(GRANULARITY), 20);
  header.writeBigUInt64LE(1n, 28);
  header.writeBigUInt64LE(BigInt(DESC_SIZE), 36);
  header.writeUInt32LE(GTES_PER_GT, 44);
  header.writeBigUInt64LE(BigInt(rgdOffset), 48);
  header.writeBigUInt64LE(BigInt(gdOffset), 56);
  header.writeBigUInt64LE(BigInt(grainOffset), 64);
  Buffer.from([0x0a, 0x20, 0x0d, 0x0a]).copy(header, 73);
  header.writeUInt16LE(compress ? 1 : 0, 77);
  const directory = (first: number) => {
    const gd = Buffer.alloc(gdSectors * SECTOR);
    for (let i = 0; i < gtCount; i++) gd.writeUInt32LE(first + gdSectors + i * gtSectors, i * 4);
    return gd;
  };
  return {
    length: grainOffset * SECTOR,
    writes: [{ pos: 0, bytes: header }, { pos: rgdOffset * SECTOR, bytes: directory(rgdOffset) }, { pos: gdOffset * SECTOR, bytes: directory(gdOffset) }],
  };
}

/**
 * The zeros qemu's file driver writes over the first block of a file it grows from empty
 * (file-posix's allocate_first_block): 4 KiB, or a sector of a smaller file. A flat extent is
 * such a file, so its first block is allocated even when no data lands in it.
 */
const firstBlock = (length: number) => new Uint8Array(Math.min(length, length < 4096 ? SECTOR : 4096));

export const vmdkCreate: CreateCapability = {
  options: VMDK_CREATE_OPTIONS,
  plan,
  layout(raw) {
    const p = raw as unknown as VmdkPlan;
    const compress = p.subformat === 'streamOptimized';
    const text = Buffer.from(descriptor(p), 'latin1');
    if (p.subformat === 'monolithicSparse' || compress) {
      const extent = sparseExtent(p.size, compress, p.zeroedGrain);
      return { image: { length: extent.length, writes: [...extent.writes, { pos: SECTOR, bytes: text }] } };
    }
    // The descriptor file holds the descriptor alone (qemu truncates it to the text's length).
    const flat = p.subformat.endsWith('Flat');
    const extentBytes = p.subformat.startsWith('twoGb') ? SPLIT_SIZE : p.size;
    const extents = p.extentFiles.map((_, i) => {
      const bytes = Math.min(extentBytes, p.size - i * extentBytes);
      return flat ? { length: bytes, writes: bytes > 0 ? [{ pos: 0, bytes: firstBlock(bytes) }] : [] } : sparseExtent(bytes, false, p.zeroedGrain);
    });
    return { image: { length: text.length, writes: [{ pos: 0, bytes: text }] }, extents };
  },
};
