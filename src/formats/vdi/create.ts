// `create -f vdi` as qemu's vdi_co_do_create writes it: the 512-byte header (qemu's text, 1 MiB
// blocks, two random UUIDs), the block map (all unallocated, or for a static image every block
// in order) and, for a static image, the data area. The UUIDs come from the host, so the layout
// stays pure.
import { ImageError, type CreateCapability, type CreateEnvironment, type CreateOptionSpec, type CreatePlan } from '../types.ts';

export const VDI_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'static', type: 'bool', help: 'VDI static (pre-allocated) image', defaultValue: 'off' },
];

const SECTOR = 512;
const BLOCK_SIZE = 1024 * 1024;
/** The largest disk qemu creates (VDI_DISK_SIZE_MAX, measured: 0x1fffff80 blocks of 1 MiB). */
const MAX_DISK_SIZE = 0x1fffff8000000n;
const UNALLOCATED = 0xffffffff;

interface VdiPlan {
  size: number;
  fixed: boolean;
  uuidImage: string;
  uuidLastSnap: string;
}

function randomUuid(env: CreateEnvironment | undefined): string {
  const b = Buffer.from(env ? env.randomBytes(16) : new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return b.toString('hex');
}

function plan(options: ReadonlyMap<string, string>, sizeIn: bigint, env?: CreateEnvironment): CreatePlan {
  const size = (((sizeIn + 511n) / 512n) * 512n) % 2n ** 64n;
  if (size > MAX_DISK_SIZE) {
    throw new ImageError(`Unsupported VDI image size (size is 0x${size.toString(16)}, max supported is 0x${MAX_DISK_SIZE.toString(16)})`);
  }
  const p: VdiPlan = { size: Number(size), fixed: options.get('static') === 'on', uuidImage: randomUuid(env), uuidLastSnap: randomUuid(env) };
  return p as unknown as CreatePlan;
}

export const vdiCreate: CreateCapability = {
  options: VDI_CREATE_OPTIONS,
  plan,
  layout(raw) {
    const p = raw as unknown as VdiPlan;
    const blocks = Math.ceil(p.size / BLOCK_SIZE);
    const mapBytes = Math.ceil((blocks * 4) / SECTOR) * SECTOR;
    const dataOffset = SECTOR + mapBytes;
    const header = Buffer.alloc(SECTOR);
    header.write('<<< QEMU VM Virtual Disk Image >>>\n', 0, 'latin1');
    header.writeUInt32LE(0xbeda107f, 0x40);
    header.writeUInt32LE(0x00010001, 0x44);
    header.writeUInt32LE(0x180, 0x48);
    header.writeUInt32LE(p.fixed ? 2 : 1, 0x4c);
    header.writeUInt32LE(SECTOR, 0x154);
    header.writeUInt32LE(dataOffset, 0x158);
    header.writeUInt32LE(SECTOR, 0x168);
    header.writeBigUInt64LE(BigInt(p.size), 0x170);
    header.writeUInt32LE(BLOCK_SIZE, 0x178);
    header.writeUInt32LE(blocks, 0x180);
    header.writeUInt32LE(p.fixed ? blocks : 0, 0x184);
    Buffer.from(p.uuidImage, 'hex').copy(header, 0x188);
    Buffer.from(p.uuidLastSnap, 'hex').copy(header, 0x198);
    const map = Buffer.alloc(mapBytes);
    for (let i = 0; i < blocks; i++) map.writeUInt32LE(p.fixed ? i : UNALLOCATED, i * 4);
    const length = dataOffset + (p.fixed ? blocks * BLOCK_SIZE : 0);
    return { image: { length, writes: [{ pos: 0, bytes: header }, { pos: SECTOR, bytes: map }] } };
  },
};
