// `create -f vhdx` as qemu's vhdx_co_create writes it: the file identifier with qemu's creator
// string, two headers (random sequence number and GUIDs), two region tables, the BAT (payload
// entries ZERO by default, or FULLY_PRESENT for a fixed disk without block_state_zero) and the
// metadata region; the file reaches 5 MiB past the BAT (plus the disk, when fixed). The random
// values and the creator come from the host (CreateEnvironment), so the layout stays pure.
import { ImageError, type CreateCapability, type CreateEnvironment, type CreateOptionSpec, type CreatePlan } from '../types.ts';
import { crc32c } from './crc32c.ts';
import { BAT_REGION, FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, METADATA_REGION, PAGE83_DATA, PHYSICAL_SECTOR_SIZE, VIRTUAL_DISK_SIZE } from './guid.ts';

export const VHDX_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size; max of 64TB.' },
  { name: 'log_size', type: 'size', help: 'Log size; min 1MB.', defaultValue: '1048576' },
  { name: 'block_size', type: 'size', help: 'Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.', defaultValue: '0' },
  { name: 'subformat', type: 'string', help: "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'." },
  {
    name: 'block_state_zero', type: 'bool',
    help: "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with subformat=dynamic.",
  },
];

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
const MAX_IMAGE_SIZE = 64 * TiB;
const MAX_BLOCK_SIZE = 256 * MiB;
const SECTOR = 512;
const PAYLOAD_BLOCK_ZERO = 2;
const PAYLOAD_BLOCK_FULLY_PRESENT = 6;

export interface VhdxPlan {
  size: number;
  logSize: number;
  blockSize: number;
  fixed: boolean;
  zeroBlocks: boolean;
  creator: string;
  sequence: number;
  /** Hex: the file write, data write and page 83 GUIDs. */
  fileWriteGuid: string;
  dataWriteGuid: string;
  page83: string;
}

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;

/** qemu_uuid_generate's bytes (random, version 4), copied as they are into a VHDX GUID. */
function randomGuid(env: CreateEnvironment | undefined): string {
  const b = Buffer.from(env ? env.randomBytes(16) : new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return b.toString('hex');
}

/** vhdx_co_create_opts's rounding, then vhdx_co_create's checks in order. */
function plan(options: ReadonlyMap<string, string>, sizeIn: bigint, env?: CreateEnvironment): CreatePlan {
  const subformat = options.get('subformat') ?? 'dynamic';
  if (subformat !== 'dynamic' && subformat !== 'fixed') throw new ImageError(`Parameter 'subformat' does not accept value '${subformat}'`);
  const size = ((sizeIn + 511n) / 512n) * 512n % 2n ** 64n;
  if (size > BigInt(MAX_IMAGE_SIZE)) throw new ImageError('Image size too large; max of 64TB');
  let logSize = BigInt(options.get('log_size') ?? MiB);
  logSize = ((logSize + BigInt(MiB) - 1n) / BigInt(MiB)) * BigInt(MiB) % 2n ** 64n;
  if (logSize > 0xffffffffn) throw new ImageError('Log size must be smaller than 4 GB');
  if (logSize < BigInt(MiB)) throw new ImageError('Log size must be a multiple of 1 MB');
  let blockSize = BigInt(options.get('block_size') ?? 0);
  blockSize = ((blockSize + BigInt(MiB) - 1n) / BigInt(MiB)) * BigInt(MiB) % 2n ** 64n;
  if (blockSize > BigInt(MAX_BLOCK_SIZE)) blockSize = BigInt(MAX_BLOCK_SIZE);
  const disk = Number(size);
  if (blockSize === 0n) blockSize = BigInt(disk > 32 * TiB ? 64 * MiB : disk > 100 * GiB ? 32 * MiB : disk > GiB ? 16 * MiB : 8 * MiB);
  if ((blockSize & (blockSize - 1n)) !== 0n) throw new ImageError('Block size must be a power of two');
  const p: VhdxPlan = {
    size: disk, logSize: Number(logSize), blockSize: Number(blockSize), fixed: subformat === 'fixed',
    zeroBlocks: options.get('block_state_zero') !== 'off', creator: `QEMU v${env?.qemuVersion ?? ''}`,
    sequence: env ? Buffer.from(env.randomBytes(4)).readUInt32LE(0) : 0,
    fileWriteGuid: randomGuid(env), dataWriteGuid: randomGuid(env), page83: randomGuid(env),
  };
  return p as unknown as CreatePlan;
}

/** A header (4 KiB, CRC-32C over it) with the given sequence number. */
function header(p: VhdxPlan, sequence: bigint): Uint8Array {
  const buf = Buffer.alloc(4 * KiB);
  buf.write('head', 0, 'latin1');
  buf.writeBigUInt64LE(sequence, 8);
  Buffer.from(p.fileWriteGuid, 'hex').copy(buf, 16);
  Buffer.from(p.dataWriteGuid, 'hex').copy(buf, 32);
  buf.writeUInt16LE(0, 64);
  buf.writeUInt16LE(1, 66);
  buf.writeUInt32LE(p.logSize, 68);
  buf.writeBigUInt64LE(BigInt(MiB), 72);
  buf.writeUInt32LE(crc32c(buf), 4);
  return buf;
}

/** The BAT's layout (vhdx_calc_bat_entries, in qemu's uint32 arithmetic). */
export function batGeometry(p: VhdxPlan): { entries: number; chunkRatio: number; offset: number; length: number } {
  const chunkRatio = (2 ** 23 * SECTOR) / p.blockSize;
  const dataBlocks = Math.ceil(p.size / p.blockSize);
  const entries = (dataBlocks + Math.floor(((dataBlocks - 1) >>> 0) / chunkRatio)) >>> 0;
  const offset = roundUp(MiB + p.logSize, MiB);
  return { entries, chunkRatio, offset, length: roundUp(entries * 8, MiB) };
}

function regionTable(bat: { offset: number; length: number }, metadataOffset: number): Uint8Array {
  const buf = Buffer.alloc(64 * KiB);
  buf.write('regi', 0, 'latin1');
  buf.writeUInt32LE(2, 8);
  Buffer.from(BAT_REGION).copy(buf, 16);
  buf.writeBigUInt64LE(BigInt(bat.offset), 32);
  buf.writeUInt32LE(bat.length, 40);
  Buffer.from(METADATA_REGION).copy(buf, 48);
  buf.writeBigUInt64LE(BigInt(metadataOffset), 64);
  buf.writeUInt32LE(MiB, 72);
  buf.writeUInt32LE(crc32c(buf), 4);
  return buf;
}

/** The metadata table (64 KiB) and the five items after it. */
function metadata(p: VhdxPlan): [Uint8Array, Uint8Array] {
  const table = Buffer.alloc(64 * KiB);
  table.write('metadata', 0, 'latin1');
  table.writeUInt16LE(5, 10);
  const items: [Uint8Array, number, number][] = [
    [FILE_PARAMETERS, 8, 0x4], [VIRTUAL_DISK_SIZE, 8, 0x6], [PAGE83_DATA, 16, 0x6], [LOGICAL_SECTOR_SIZE, 4, 0x6], [PHYSICAL_SECTOR_SIZE, 4, 0x6],
  ];
  let offset = 64 * KiB;
  items.forEach(([guid, length, flags], i) => {
    const at = 32 + i * 32;
    Buffer.from(guid).copy(table, at);
    table.writeUInt32LE(offset, at + 16);
    table.writeUInt32LE(length, at + 20);
    table.writeUInt32LE(flags, at + 24);
    offset += length;
  });
  const data = Buffer.alloc(40);
  data.writeUInt32LE(p.blockSize, 0);
  data.writeUInt32LE(p.fixed ? 1 : 0, 4);
  data.writeBigUInt64LE(BigInt(p.size), 8);
  Buffer.from(p.page83, 'hex').copy(data, 16);
  data.writeUInt32LE(SECTOR, 32);
  data.writeUInt32LE(SECTOR, 36);
  return [table, data];
}

export const vhdxCreate: CreateCapability = {
  options: VHDX_CREATE_OPTIONS,
  plan,
  layout(raw) {
    const p = raw as unknown as VhdxPlan;
    const identifier = Buffer.concat([Buffer.from('vhdxfile', 'latin1'), Buffer.from(p.creator, 'utf16le')]);
    const bat = batGeometry(p);
    const metadataOffset = roundUp(bat.offset + bat.length, MiB);
    const dataStart = bat.offset + bat.length + 5 * MiB;
    const writes: { pos: number; bytes: Uint8Array }[] = [
      { pos: 0, bytes: identifier },
      { pos: 64 * KiB, bytes: header(p, BigInt(p.sequence)) },
      { pos: 128 * KiB, bytes: header(p, BigInt(p.sequence) + 1n) },
    ];
    // qemu writes the BAT only when an entry is not zero (a fixed disk, or ZERO blocks).
    if (p.fixed || p.zeroBlocks) {
      const table = Buffer.alloc(bat.length);
      const state = p.zeroBlocks ? PAYLOAD_BLOCK_ZERO : PAYLOAD_BLOCK_FULLY_PRESENT;
      const blocks = Math.ceil(p.size / p.blockSize);
      for (let block = 0; block < blocks; block++) {
        const index = block + Math.floor(block / bat.chunkRatio);
        const fileOffset = state === PAYLOAD_BLOCK_ZERO ? 0n : BigInt(roundUp(dataStart + block * p.blockSize, MiB));
        table.writeBigUInt64LE(fileOffset | BigInt(state), index * 8);
      }
      writes.push({ pos: bat.offset, bytes: table });
    }
    const region = regionTable(bat, metadataOffset);
    writes.push({ pos: 192 * KiB, bytes: region }, { pos: 256 * KiB, bytes: region });
    const [table, items] = metadata(p);
    writes.push({ pos: metadataOffset, bytes: table }, { pos: metadataOffset + 64 * KiB, bytes: items });
    return { image: { length: dataStart + (p.fixed ? p.size : 0), writes } };
  },
};
