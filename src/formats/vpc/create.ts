// `create -f vpc` as qemu's vpc_co_create writes it: the size rounded up to a CHS geometry (unless
// force_size), a footer, and for a dynamic disk a copy of the footer, the dynamic header and a BAT
// of unallocated entries before the footer at the end; a fixed disk is the data then the footer.
// The footer's timestamp and UUID are inputs (the host draws them), so the layout stays pure.
import { ImageError, type CreateCapability, type CreateEnvironment, type CreateOptionSpec, type CreatePlan } from '../types.ts';

export const VPC_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'subformat', type: 'string', help: 'Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} ' },
  { name: 'force_size', type: 'bool', help: 'Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation' },
];

const SECTOR = 512;
const MAX_GEOMETRY = 65535 * 16 * 255;
/** 2040 GiB in sectors: the largest disk qemu creates. */
const MAX_SECTORS = 0xff000000;
export const BLOCK_SIZE = 2 * 1024 * 1024;
/** Seconds from the Unix epoch to 2000-01-01, the VHD timestamp's origin. */
const VHD_EPOCH = 946684800;

export interface VpcPlan {
  fixed: boolean;
  force: boolean;
  cyls: number;
  heads: number;
  secsPerCyl: number;
  /** Bytes the disk has (the footer's sizes). */
  size: number;
  /** Seconds since 2000-01-01 (uint32). */
  timestamp: number;
  /** 32 hex digits. */
  uuid: string;
}

/** calculate_geometry: the VHD specification's CHS for a sector count (which it may round down). */
function geometry(totalSectors: number): [number, number, number] {
  const sectors = Math.min(totalSectors, MAX_GEOMETRY);
  let secs: number;
  let heads: number;
  let cylsTimesHeads: number;
  if (sectors >= 65535 * 16 * 63) {
    secs = 255;
    heads = 16;
    cylsTimesHeads = Math.floor(sectors / secs);
  } else {
    secs = 17;
    cylsTimesHeads = Math.floor(sectors / secs);
    heads = Math.max(4, Math.ceil(cylsTimesHeads / 1024));
    if (cylsTimesHeads >= heads * 1024 || heads > 16) {
      secs = 31;
      heads = 16;
      cylsTimesHeads = Math.floor(sectors / secs);
    }
    if (cylsTimesHeads >= heads * 1024) {
      secs = 63;
      heads = 16;
      cylsTimesHeads = Math.floor(sectors / secs);
    }
  }
  return [Math.floor(cylsTimesHeads / heads), heads, secs];
}

/** vpc_co_create's checks and geometry; the footer's clock and UUID come from `env` (zeros without it). */
function plan(options: ReadonlyMap<string, string>, size: bigint, env?: CreateEnvironment): CreatePlan {
  const subformat = options.get('subformat') ?? 'dynamic';
  if (subformat !== 'dynamic' && subformat !== 'fixed') throw new ImageError(`Parameter 'subformat' does not accept value '${subformat}'`);
  const force = options.get('force_size') === 'on';
  // Rounded up to a sector first, in uint64, as qemu's vpc_co_create_opts does.
  const requested = BigInt.asIntN(64, (((size + 511n) / 512n) * 512n) % 2n ** 64n);
  if (requested < 0n) throw new ImageError('Image size cannot be negative');
  // Sectors asked for (capped far above the 2040 GiB limit, which is checked below).
  const wanted = Number(requested / 512n > 2n ** 40n ? 2n ** 40n : requested / 512n);
  let [cyls, heads, secs] = force ? [65535, 16, 255] : [0, 0, 0];
  if (!force) {
    const start = Math.min(MAX_GEOMETRY, wanted);
    // Up from the wanted count until the geometry holds it (or reaches the largest one).
    for (let i = 0; start > cyls * heads * secs; i++) [cyls, heads, secs] = geometry(start + i);
  }
  let sectors: number;
  if (cyls * heads * secs === MAX_GEOMETRY) {
    sectors = wanted;
    if (sectors > MAX_SECTORS) throw new ImageError('Disk size is too large, max size is 2040 GiB', 'EFBIG');
  } else {
    sectors = cyls * heads * secs;
  }
  // A forced (or largest-geometry) size is the size asked for, in bytes; otherwise the geometry's.
  const bytes = cyls * heads * secs === MAX_GEOMETRY ? Number(requested) : sectors * SECTOR;
  const timestamp = env ? vhdTimestamp(env.now) : 0;
  // qemu_uuid_generate: random, marked as a version 4 (RFC 4122 variant) UUID.
  const random = Buffer.from(env ? env.randomBytes(16) : new Uint8Array(16));
  random[6] = (random[6] & 0x0f) | 0x40;
  random[8] = (random[8] & 0x3f) | 0x80;
  const uuid = random.toString('hex');
  const p: VpcPlan = { fixed: subformat === 'fixed', force, cyls, heads, secsPerCyl: secs, size: bytes, timestamp, uuid };
  return p as unknown as CreatePlan;
}

/** One's complement of the byte sum (the checksum field counted as zero). */
function checksum(buf: Uint8Array): number {
  let sum = 0;
  for (const b of buf) sum = (sum + b) >>> 0;
  return ~sum >>> 0;
}

export function footer(p: VpcPlan): Uint8Array {
  const buf = Buffer.alloc(SECTOR);
  buf.write('conectix', 0, 'latin1');
  buf.writeUInt32BE(2, 8);
  buf.writeUInt32BE(0x00010000, 12);
  buf.writeBigUInt64BE(p.fixed ? 0xffffffffffffffffn : BigInt(SECTOR), 16);
  buf.writeUInt32BE(p.timestamp >>> 0, 24);
  buf.write(p.force ? 'qem2' : 'qemu', 28, 'latin1');
  buf.writeUInt16BE(5, 32);
  buf.writeUInt16BE(3, 34);
  buf.write('Wi2k', 36, 'latin1');
  buf.writeBigUInt64BE(BigInt(p.size), 40);
  buf.writeBigUInt64BE(BigInt(p.size), 48);
  buf.writeUInt16BE(p.cyls, 56);
  buf[58] = p.heads;
  buf[59] = p.secsPerCyl;
  buf.writeUInt32BE(p.fixed ? 2 : 3, 60);
  Buffer.from(p.uuid, 'hex').copy(buf, 68);
  buf.writeUInt32BE(checksum(buf), 64);
  return buf;
}

function dynamicHeader(entries: number): Uint8Array {
  const buf = Buffer.alloc(1024);
  buf.write('cxsparse', 0, 'latin1');
  buf.writeBigUInt64BE(0xffffffffffffffffn, 8);
  buf.writeBigUInt64BE(3n * BigInt(SECTOR), 16);
  buf.writeUInt32BE(0x00010000, 24);
  buf.writeUInt32BE(entries, 28);
  buf.writeUInt32BE(BLOCK_SIZE, 32);
  buf.writeUInt32BE(checksum(buf), 36);
  return buf;
}

export const vpcCreate: CreateCapability = {
  options: VPC_CREATE_OPTIONS,
  plan,
  layout(raw) {
    const p = raw as unknown as VpcPlan;
    const tail = footer(p);
    if (p.fixed) return { image: { length: p.size + SECTOR, writes: [{ pos: 0, bytes: firstBlock(p.size + SECTOR) }, { pos: p.size, bytes: tail }] } };
    // The BAT counts blocks of the geometry's sectors (the footer may say a larger forced size).
    const sectors = Math.floor(p.size / SECTOR);
    const entries = Math.ceil(sectors / (BLOCK_SIZE / SECTOR));
    const batBytes = Math.ceil((entries * 4) / SECTOR) * SECTOR;
    const end = 3 * SECTOR + batBytes;
    return {
      image: {
        length: end + SECTOR,
        writes: [
          { pos: 0, bytes: tail },
          { pos: end, bytes: tail },
          { pos: 3 * SECTOR, bytes: new Uint8Array(batBytes).fill(0xff) },
          { pos: SECTOR, bytes: dynamicHeader(entries) },
        ],
      },
    };
  },
};

/**
 * The zeros qemu's file driver writes over the first block of a file it grows from empty
 * (file-posix's allocate_first_block, for its alignment probing): 4 KiB, or a sector of a file
 * smaller than that. A fixed disk's data area starts there, so the block is allocated even when
 * no data lands in it (`info`'s disk size shows it).
 */
const firstBlock = (length: number) => new Uint8Array(Math.min(length, length < 4096 ? SECTOR : 4096));

/** The footer's clock: seconds since 2000-01-01 as a uint32. */
export const vhdTimestamp = (unixSeconds: number): number => (unixSeconds - VHD_EPOCH) >>> 0;
