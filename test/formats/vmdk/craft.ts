// Byte-by-byte builders for VMDK files, so hostile variants need no oracle to exist.
import { deflateSync } from 'node:zlib';

export const GD_AT_END = (1n << 64n) - 1n;

export interface SparseOpts {
  version?: number;
  flags?: number;
  capacity?: bigint;
  granularity?: bigint;
  descOffset?: bigint;
  descSize?: bigint;
  numGtesPerGt?: number;
  rgdOffset?: bigint;
  gdOffset?: bigint;
  grainOffset?: bigint;
  compressAlgorithm?: number;
  magic?: string;
}

/** A 512-byte hosted sparse header ("KDMV"); fields default to a small valid image. */
export function sparseHeader(o: SparseOpts = {}): Buffer {
  const b = Buffer.alloc(512);
  b.write(o.magic ?? 'KDMV', 0, 'latin1');
  b.writeUInt32LE(o.version ?? 1, 4);
  b.writeUInt32LE(o.flags ?? 3, 8);
  b.writeBigUInt64LE(o.capacity ?? 2048n, 12);
  b.writeBigUInt64LE(o.granularity ?? 128n, 20);
  b.writeBigUInt64LE(o.descOffset ?? 1n, 28);
  b.writeBigUInt64LE(o.descSize ?? 20n, 36);
  b.writeUInt32LE(o.numGtesPerGt ?? 512, 44);
  b.writeBigUInt64LE(o.rgdOffset ?? 0n, 48);
  b.writeBigUInt64LE(o.gdOffset ?? 21n, 56);
  b.writeBigUInt64LE(o.grainOffset ?? 128n, 64);
  b.write('\n \r\n', 73, 'latin1');
  b.writeUInt16LE(o.compressAlgorithm ?? 0, 77);
  return b;
}

export function descriptorText(o: { createType?: string; extents?: string[]; cid?: string; parentCid?: string; extra?: string } = {}): string {
  return [
    '# Disk DescriptorFile',
    'version=1',
    `CID=${o.cid ?? '1234abcd'}`,
    `parentCID=${o.parentCid ?? 'ffffffff'}`,
    `createType="${o.createType ?? 'monolithicSparse'}"`,
    o.extra ?? '',
    '# Extent description',
    ...(o.extents ?? ['RW 2048 SPARSE "self.vmdk"']),
    '',
  ].join('\n');
}

/**
 * A small monolithicSparse image: header, descriptor (sectors 1-20), grain directory at sector
 * 21, one grain table at 22, grains from sector 128. `grains` maps a grain index to its bytes.
 */
export function sparseImage(o: SparseOpts & { descriptor?: string; grains?: Map<number, Uint8Array>; zeroGtes?: number[] } = {}): Buffer {
  const grainBytes = 65536;
  const grains = o.grains ?? new Map<number, Uint8Array>();
  const file = Buffer.alloc(128 * 512 + grains.size * grainBytes);
  sparseHeader(o).copy(file, 0);
  file.write(o.descriptor ?? descriptorText(), 512, 'latin1');
  file.writeUInt32LE(22, 21 * 512);
  let sector = 128;
  for (const [index, data] of [...grains].sort((a, b) => a[0] - b[0])) {
    file.writeUInt32LE(sector, 22 * 512 + index * 4);
    file.set(data, sector * 512);
    sector += 128;
  }
  for (const index of o.zeroGtes ?? []) file.writeUInt32LE(1, 22 * 512 + index * 4);
  return file;
}

function marker(val: bigint, size: number, type: number): Buffer {
  const m = Buffer.alloc(512);
  m.writeBigUInt64LE(val, 0);
  m.writeUInt32LE(size, 8);
  m.writeUInt32LE(type, 12);
  return m;
}

/**
 * A stream-optimized image: grains as [lba, size, zlib data] markers, then grain table, grain
 * directory, footer and end-of-stream marker. `rawGrains` lets a test supply a grain's stored
 * bytes (after the 12-byte marker head) and its claimed size directly.
 */
export function streamImage(o: {
  grains?: Map<number, Uint8Array>;
  rawGrains?: Map<number, { size: number; bytes: Uint8Array }>;
  footer?: SparseOpts;
  capacity?: bigint;
}): Buffer {
  const capacity = o.capacity ?? 2048n;
  const parts: Buffer[] = [sparseHeader({ capacity, flags: 0x30001, gdOffset: GD_AT_END, compressAlgorithm: 1, version: 3, grainOffset: 128n })];
  const desc = Buffer.alloc(127 * 512);
  desc.write(descriptorText({ createType: 'streamOptimized' }), 'latin1');
  parts.push(desc);
  let sector = 128;
  const gt = Buffer.alloc(2048);
  const stored = new Map<number, { size: number; bytes: Uint8Array }>(o.rawGrains ?? []);
  for (const [i, data] of o.grains ?? []) {
    const z = deflateSync(data);
    stored.set(i, { size: z.length, bytes: z });
  }
  for (const [i, g] of [...stored].sort((a, b) => a[0] - b[0])) {
    const head = Buffer.alloc(12);
    head.writeBigUInt64LE(BigInt(i * 128), 0);
    head.writeUInt32LE(g.size, 8);
    const body = Buffer.concat([head, g.bytes]);
    const padded = Buffer.alloc(Math.ceil(body.length / 512) * 512);
    body.copy(padded);
    gt.writeUInt32LE(sector, i * 4);
    parts.push(padded);
    sector += padded.length / 512;
  }
  parts.push(marker(4n, 0, 1));
  const gtSector = sector + 1;
  parts.push(gt);
  sector = gtSector + 4;
  parts.push(marker(1n, 0, 2));
  const gd = Buffer.alloc(512);
  gd.writeUInt32LE(gtSector, 0);
  const gdSector = sector + 1;
  parts.push(gd);
  parts.push(marker(1n, 0, 3));
  parts.push(sparseHeader({ capacity, flags: 0x30001, gdOffset: BigInt(gdSector), compressAlgorithm: 1, version: 3, grainOffset: 128n, ...o.footer }));
  parts.push(marker(0n, 0, 0));
  return Buffer.concat(parts);
}

/** An old ESX "COWD" sparse header with its grain directory right after it. */
export function cowdImage(o: { granularity: number; diskSectors: number; l1dirSize: number }): Buffer {
  const b = Buffer.alloc(4096);
  b.write('COWD', 0, 'latin1');
  b.writeUInt32LE(1, 4);
  b.writeUInt32LE(3, 8);
  b.writeUInt32LE(o.diskSectors, 12);
  b.writeUInt32LE(o.granularity, 16);
  b.writeUInt32LE(4, 20);
  b.writeUInt32LE(o.l1dirSize, 24);
  // qemu looks for the CIDs at 0x200 in any sparse file.
  b.write(descriptorText({ createType: 'vmfsSparse' }), 512, 'latin1');
  return b;
}

/**
 * An seSparse extent: const header (sector 0), volatile header (1), grain directory (2), one
 * grain table (3-66), 4 KiB grains from sector 67. `grains` maps a guest grain index to its bytes
 * (stored in that order); `zero` and `unmapped` list grains marked so. `header` overrides const
 * header fields by byte offset; `volatile` likewise for the volatile header.
 */
export function seSparseExtent(o: { capacity?: bigint; grains?: Map<number, Uint8Array>; zero?: number[]; unmapped?: number[]; header?: Record<number, bigint>; volatile?: Record<number, bigint> } = {}): Buffer {
  const grains = [...(o.grains ?? new Map<number, Uint8Array>())];
  const file = Buffer.alloc((67 + grains.length * 8) * 512);
  const fields: Record<number, bigint> = { 0: 0xcafebaben, 8: 0x0000000200000001n, 16: o.capacity ?? 2048n, 24: 8n, 32: 64n, 80: 1n, 128: 2n, 136: 1n, 144: 3n, 192: 67n, ...o.header };
  for (const [off, v] of Object.entries(fields)) file.writeBigUInt64LE(v, Number(off));
  const vol: Record<number, bigint> = { 512: 0xcafecafen, ...Object.fromEntries(Object.entries(o.volatile ?? {}).map(([k, v]) => [512 + Number(k), v])) };
  for (const [off, v] of Object.entries(vol)) file.writeBigUInt64LE(v, Number(off));
  file.writeBigUInt64LE(0x1000000000000000n, 2 * 512);
  const gt = 3 * 512;
  grains.forEach(([index, data], i) => {
    const n = BigInt(i);
    file.writeBigUInt64LE(0x3000000000000000n | ((n & 0xfffn) << 48n) | (n >> 12n), gt + index * 8);
    file.set(data, (67 + i * 8) * 512);
  });
  for (const index of o.zero ?? []) file.writeBigUInt64LE(0x2000000000000000n, gt + index * 8);
  for (const index of o.unmapped ?? []) file.writeBigUInt64LE(0x1000000000000000n, gt + index * 8);
  return file;
}
