// `create -f vmdk` for the single-file subformats (monolithicSparse, streamOptimized) as qemu's
// vmdk_co_do_create writes them: the sparse extent header, the redundant and the main grain
// directory with zeroed grain tables, and the descriptor at sector 1. The descriptor's CID is
// random in qemu; here it is an input (the host draws it), so the layout stays pure. Subformats
// with more than one file and backing files are refused (instar does not create them yet).
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

interface VmdkPlan {
  /** Bytes (a multiple of 512). */
  size: number;
  subformat: string;
  adapter: string;
  hwVersion: string;
  toolsVersion: string;
  zeroedGrain: boolean;
  /** The extent's file name as the descriptor names it (the basename). */
  extentName: string;
  cid: number;
}

/** vmdk_co_create_opts and vmdk_co_do_create's checks, in their order. */
function plan(options: ReadonlyMap<string, string>, size: bigint, env?: CreateEnvironment): CreatePlan {
  const rounded = BigInt.asIntN(64, (((size + 511n) / 512n) * 512n) % 2n ** 64n);
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
  if (subformat !== 'monolithicSparse' && subformat !== 'streamOptimized') {
    throw new ImageError(`instar creates only monolithicSparse and streamOptimized VMDK images, not ${subformat}; nothing was written`);
  }
  if (options.has('backing_file')) throw new ImageError('instar does not create VMDK images with a backing file yet; nothing was written');
  if (rounded < 0n || !Number.isSafeInteger(Number(rounded))) throw new ImageError('instar cannot create a VMDK image of this size; nothing was written');
  const name = env?.filename ?? '';
  const p: VmdkPlan = {
    size: Number(rounded), subformat, adapter, hwVersion: hwVersion ?? '4', toolsVersion: options.get('toolsversion') ?? '2147483647',
    zeroedGrain, extentName: name.slice(name.lastIndexOf('/') + 1),
    cid: env ? Buffer.from(env.randomBytes(4)).readUInt32BE(0) : 0,
  };
  return p as unknown as CreatePlan;
}

/** The descriptor text (qemu's template, printf'd). */
function descriptor(p: VmdkPlan): string {
  const heads = p.adapter === 'ide' ? 16 : 255;
  const cylinders = Math.floor(p.size / (63 * heads * SECTOR));
  return '# Disk DescriptorFile\nversion=1\n' +
    `CID=${p.cid.toString(16)}\nparentCID=ffffffff\ncreateType="${p.subformat}"\n\n` +
    `# Extent description\nRW ${Math.ceil(p.size / SECTOR)} SPARSE "${p.extentName}"\n\n` +
    '# The Disk Data Base\n#DDB\n\n' +
    `ddb.virtualHWVersion = "${p.hwVersion}"\nddb.geometry.cylinders = "${cylinders}"\nddb.geometry.heads = "${heads}"\n` +
    `ddb.geometry.sectors = "63"\nddb.adapterType = "${p.adapter}"\nddb.toolsVersion = "${p.toolsVersion}"\n`;
}

export const vmdkCreate: CreateCapability = {
  options: VMDK_CREATE_OPTIONS,
  plan,
  layout(raw) {
    const p = raw as unknown as VmdkPlan;
    const compress = p.subformat === 'streamOptimized';
    const capacity = p.size / SECTOR;
    const grains = Math.ceil(capacity / GRANULARITY);
    const gtSectors = Math.ceil((GTES_PER_GT * 4) / SECTOR);
    const gtCount = Math.ceil(grains / GTES_PER_GT);
    const gdSectors = Math.ceil((gtCount * 4) / SECTOR);
    const rgdOffset = 1 + DESC_SIZE;
    const gdOffset = rgdOffset + gdSectors + gtSectors * gtCount;
    const grainOffset = Math.ceil((gdOffset + gdSectors + gtSectors * gtCount) / GRANULARITY) * GRANULARITY;
    const header = Buffer.alloc(79);
    header.write('KDMV', 0, 'latin1');
    header.writeUInt32LE(compress ? 3 : p.zeroedGrain ? 2 : 1, 4);
    // NL detect, redundant grain directory, zeroed grains, compression and markers.
    header.writeUInt32LE(3 | (compress ? 0x30000 : 0) | (p.zeroedGrain ? 4 : 0), 8);
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
      image: {
        length: grainOffset * SECTOR,
        writes: [
          { pos: 0, bytes: header },
          { pos: rgdOffset * SECTOR, bytes: directory(rgdOffset) },
          { pos: gdOffset * SECTOR, bytes: directory(gdOffset) },
          { pos: SECTOR, bytes: Buffer.from(descriptor(p), 'latin1') },
        ],
      },
    };
  },
};
