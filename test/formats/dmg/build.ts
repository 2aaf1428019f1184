// Builds UDIF (.dmg) images byte by byte: a data fork of chunks, an XML property list whose
// blkx <data> elements hold base64 "mish" block tables (or a resource fork holding them), and
// the 512-byte "koly" trailer at the end that points at both.
import { deflateSync } from 'node:zlib';

export const UDZE = 0x00000000;
export const UDRW = 0x00000001;
export const UDIG = 0x00000002;
export const UDZO = 0x80000005;
export const UDBZ = 0x80000006;
export const ULFO = 0x80000007;
export const UDCM = 0x7ffffffe;
export const UDLE = 0xffffffff;

export interface ChunkEntry {
  type: number;
  sector: bigint | number;
  sectorCount: bigint | number;
  /** Offset relative to the mish block's data offset (plus the data fork offset). */
  offset: bigint | number;
  length: bigint | number;
}

/** A mish block: 204-byte header then 40-byte chunk entries. */
export function mishBlock(firstSector: bigint | number, entries: ChunkEntry[], opts: { dataOffset?: bigint; magic?: string } = {}): Buffer {
  const b = Buffer.alloc(204 + entries.length * 40);
  b.write(opts.magic ?? 'mish', 0, 'latin1');
  b.writeUInt32BE(1, 4);
  b.writeBigUInt64BE(BigInt(firstSector), 8);
  const total = entries.reduce((n, e) => n + BigInt(e.sectorCount), 0n);
  b.writeBigUInt64BE(total & ((1n << 64n) - 1n), 0x10);
  b.writeBigUInt64BE(opts.dataOffset ?? 0n, 0x18);
  b.writeUInt32BE(entries.length, 0xc8);
  entries.forEach((e, i) => {
    const at = 204 + i * 40;
    b.writeUInt32BE(e.type >>> 0, at);
    b.writeBigUInt64BE(BigInt(e.sector), at + 8);
    b.writeBigUInt64BE(BigInt(e.sectorCount), at + 16);
    b.writeBigUInt64BE(BigInt(e.offset), at + 24);
    b.writeBigUInt64BE(BigInt(e.length), at + 32);
  });
  return b;
}

/** The property list Apple's hdiutil writes, reduced to what readers look at. */
export function plist(blocks: Buffer[]): Buffer {
  const entries = blocks
    .map(
      (b, i) =>
        `\t\t\t<dict>\n\t\t\t\t<key>Attributes</key>\n\t\t\t\t<string>0x0050</string>\n\t\t\t\t<key>Data</key>\n\t\t\t\t<data>\n\t\t\t\t${b
          .toString('base64')
          .replace(/(.{52})/g, '$1\n\t\t\t\t')}\n\t\t\t\t</data>\n\t\t\t\t<key>ID</key>\n\t\t\t\t<string>${i}</string>\n\t\t\t\t<key>Name</key>\n\t\t\t\t<string>part ${i}</string>\n\t\t\t</dict>\n`,
    )
    .join('');
  return Buffer.from(
    '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n' +
      `<plist version="1.0">\n<dict>\n\t<key>resource-fork</key>\n\t<dict>\n\t\t<key>blkx</key>\n\t\t<array>\n${entries}\t\t</array>\n\t</dict>\n</dict>\n</plist>\n`,
    'latin1',
  );
}

export interface KolyFields {
  dataForkOffset?: bigint;
  rsrcForkOffset?: bigint;
  rsrcForkLength?: bigint;
  xmlOffset?: bigint;
  xmlLength?: bigint;
  sectorCount: bigint;
}

export function koly(f: KolyFields): Buffer {
  const k = Buffer.alloc(512);
  k.write('koly', 0, 'latin1');
  k.writeUInt32BE(4, 4);
  k.writeUInt32BE(512, 8);
  k.writeUInt32BE(1, 12);
  k.writeBigUInt64BE(f.dataForkOffset ?? 0n, 0x18);
  k.writeBigUInt64BE(f.rsrcForkOffset ?? 0n, 0x28);
  k.writeBigUInt64BE(f.rsrcForkLength ?? 0n, 0x30);
  k.writeBigUInt64BE(f.xmlOffset ?? 0n, 0xd8);
  k.writeBigUInt64BE(f.xmlLength ?? 0n, 0xe0);
  k.writeBigUInt64BE(f.sectorCount, 0x1ec);
  return k;
}

/** data fork + plist + koly, with the koly's offsets filled in. */
export function buildDmg(dataFork: Buffer, blocks: Buffer[], sectorCount: bigint | number, extra: Partial<KolyFields> = {}): Buffer {
  const xml = plist(blocks);
  return Buffer.concat([
    dataFork,
    xml,
    koly({ xmlOffset: BigInt(dataFork.length), xmlLength: BigInt(xml.length), sectorCount: BigInt(sectorCount), ...extra }),
  ]);
}

/** data fork + resource fork (256-byte header, then length-prefixed mish resources) + koly. */
export function buildDmgRsrc(dataFork: Buffer, blocks: Buffer[], sectorCount: bigint | number): Buffer {
  const resources = Buffer.concat(
    blocks.map((b) => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      return Buffer.concat([len, b]);
    }),
  );
  const header = Buffer.alloc(256);
  header.writeUInt32BE(256, 0); // resource data offset
  header.writeUInt32BE(256 + resources.length, 4); // map offset
  header.writeUInt32BE(resources.length, 8); // resource data length
  const fork = Buffer.concat([header, resources]);
  return Buffer.concat([
    dataFork,
    fork,
    koly({ rsrcForkOffset: BigInt(dataFork.length), rsrcForkLength: BigInt(fork.length), sectorCount: BigInt(sectorCount) }),
  ]);
}

export function sectors(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n * 512);
  for (let i = 0; i < b.length; i++) b[i] = (i * 13 + seed * 17 + (i >> 9)) & 0xff;
  return b;
}

export { deflateSync };
