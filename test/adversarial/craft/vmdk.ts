// VMDK images: text descriptors written by hand (extents, parent hints, hostile content) and
// sparse headers patched field by field. Field offsets are from qemu's VMDK4Header layout.

export interface Extent {
  access?: string;
  sectors: string | number | bigint;
  type: string;
  file: string;
  offset?: number;
}

export function descriptor(opts: { createType?: string; extents: Extent[]; parentCID?: string; parentHint?: string; extra?: string }): string {
  const lines = [
    '# Disk DescriptorFile',
    'version=1',
    'CID=12345678',
    `parentCID=${opts.parentCID ?? 'ffffffff'}`,
    `createType="${opts.createType ?? 'monolithicFlat'}"`,
    ...(opts.parentHint !== undefined ? [`parentFileNameHint="${opts.parentHint}"`] : []),
    '',
    '# Extent description',
    ...opts.extents.map((e) => `${e.access ?? 'RW'} ${e.sectors} ${e.type} "${e.file}"${e.offset !== undefined ? ` ${e.offset}` : e.type === 'FLAT' ? ' 0' : ''}`),
    '',
    '# The Disk Data Base',
    '#DDB',
    'ddb.virtualHWVersion = "4"',
    'ddb.geometry.cylinders = "2"',
    'ddb.geometry.heads = "16"',
    'ddb.geometry.sectors = "63"',
    'ddb.adapterType = "ide"',
    ...(opts.extra !== undefined ? [opts.extra] : []),
    '',
  ];
  return lines.join('\n');
}

/** A descriptor naming one flat extent. */
export function flatDescriptor(file: string, sectors: string | number | bigint = 2048): string {
  return descriptor({ extents: [{ sectors, type: 'FLAT', file }] });
}

/** Sparse header fields (little-endian) a case may patch, with their offsets and widths. */
export const SPARSE_FIELDS = {
  version: [4, 4],
  flags: [8, 4],
  capacity: [12, 8],
  granularity: [20, 8],
  descOffset: [28, 8],
  descSize: [36, 8],
  gtesPerGt: [44, 4],
  rgdOffset: [48, 8],
  gdOffset: [56, 8],
  overhead: [64, 8],
  compressAlgorithm: [77, 2],
} as const satisfies Record<string, readonly [number, number]>;

/** Returns a copy of a monolithicSparse image with header fields replaced. */
export function patchSparse(image: Buffer, fields: Partial<Record<keyof typeof SPARSE_FIELDS, bigint>>): Buffer {
  const out = Buffer.from(image);
  for (const [name, value] of Object.entries(fields) as [keyof typeof SPARSE_FIELDS, bigint][]) {
    const [at, width] = SPARSE_FIELDS[name];
    if (width === 8) out.writeBigUInt64LE(BigInt.asUintN(64, value), at);
    else if (width === 4) out.writeUInt32LE(Number(BigInt.asUintN(32, value)), at);
    else out.writeUInt16LE(Number(BigInt.asUintN(16, value)), at);
  }
  return out;
}

/** Replaces the embedded descriptor of a monolithicSparse image (it starts at sector descOffset). */
export function withEmbeddedDescriptor(image: Buffer, text: string): Buffer {
  const out = Buffer.from(image);
  const at = Number(out.readBigUInt64LE(28)) * 512;
  const size = Number(out.readBigUInt64LE(36)) * 512;
  out.fill(0, at, at + size);
  Buffer.from(text).copy(out, at, 0, Math.min(size, Buffer.byteLength(text)));
  return out;
}
