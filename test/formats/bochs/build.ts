// Builds Bochs "growing" redolog images byte by byte from the format: a 512-byte header, the
// catalog (one u32 per extent, 0xffffffff = unallocated), then extents of [sector bitmap][data].
export interface BochsSpec {
  version?: 1 | 2;
  diskSize: bigint | number;
  extentSize: number;
  bitmapSize?: number;
  catalogSize?: number;
  headerSize?: number;
  /** catalog[i] = index of the stored extent, or absent for unallocated. */
  catalog: (number | undefined)[];
  /** Stored extents: bitmap bits per sector and a fill byte per sector. */
  extents: { bits: number[]; fill: (sector: number) => number }[];
  magic?: string;
  subtype?: string;
}

export function buildBochs(spec: BochsSpec): Buffer {
  const h = Buffer.alloc(512);
  h.write(spec.magic ?? 'Bochs Virtual HD Image', 0, 'latin1');
  h.write('Redolog', 32, 'latin1');
  h.write(spec.subtype ?? 'Growing', 48, 'latin1');
  const v1 = spec.version === 1;
  h.writeUInt32LE(v1 ? 0x10000 : 0x20000, 64);
  h.writeUInt32LE(spec.headerSize ?? 512, 68);
  const n = spec.catalogSize ?? spec.catalog.length;
  h.writeUInt32LE(n, 72);
  const bitmapSize = spec.bitmapSize ?? 512;
  h.writeUInt32LE(bitmapSize, 76);
  h.writeUInt32LE(spec.extentSize, 80);
  h.writeBigUInt64LE(BigInt(spec.diskSize), v1 ? 84 : 88);
  const catalog = Buffer.alloc(spec.catalog.length * 4, 0xff);
  spec.catalog.forEach((e, i) => e !== undefined && catalog.writeUInt32LE(e, i * 4));
  const bitmapBytes = Math.ceil(bitmapSize / 512) * 512;
  const extents = spec.extents.map(({ bits, fill }) => {
    const b = Buffer.alloc(bitmapBytes + Math.ceil(spec.extentSize / 512) * 512);
    bits.forEach((bit) => (b[Math.floor(bit / 8)] |= 1 << bit % 8));
    for (let s = 0; s * 512 < spec.extentSize; s++) b.fill(fill(s), bitmapBytes + s * 512, bitmapBytes + (s + 1) * 512);
    return b;
  });
  return Buffer.concat([h, catalog, ...extents]);
}
