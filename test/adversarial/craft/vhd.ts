// VHD (qemu's vpc) differencing disks and VHDX with parent locators, built by hand: a dynamic
// VHD is footer copy + dynamic header + BAT + locator data + footer; a VHDX is a qemu-made image
// whose metadata region gets a parent locator item. Layouts from the VHD and VHDX specifications.

function checksum(b: Buffer): number {
  let sum = 0;
  for (const byte of b) sum = (sum + byte) >>> 0;
  return ~sum >>> 0;
}

export interface Locator {
  code: string; // 'W2ku' absolute, 'W2ru' relative (UTF-16LE), 'MacX' (UTF-8 URL)…
  data: Buffer;
  /** Overrides the stored length / offset (out-of-range cases). */
  length?: number;
  offset?: bigint;
}

export const utf16 = (s: string): Buffer => Buffer.from(s, 'utf16le');

/** A differencing (or, with diskType 3, dynamic) VHD of 1 MiB with the given parent locators. */
export function vhd(opts: { parentName?: string; locators?: Locator[]; diskType?: number; currentSize?: bigint; blockSize?: number; maxTableEntries?: number; tableOffset?: bigint }): Buffer {
  const locators = opts.locators ?? [];
  const dataStart = 2048;
  const dataLen = locators.reduce((n, l) => n + Math.ceil(l.data.length / 512) * 512, 0);
  const img = Buffer.alloc(dataStart + dataLen + 512);
  const footer = Buffer.alloc(512);
  footer.write('conectix', 0, 'latin1');
  footer.writeUInt32BE(2, 8); // features: reserved bit
  footer.writeUInt32BE(0x00010000, 12);
  footer.writeBigUInt64BE(512n, 16); // dynamic header offset
  footer.write('qemu', 28, 'latin1');
  footer.write('Wi2k', 36, 'latin1');
  const size = opts.currentSize ?? 1048576n;
  footer.writeBigUInt64BE(size, 40);
  footer.writeBigUInt64BE(size, 48);
  footer.writeUInt16BE(2, 56); // CHS: 2 cylinders, 16 heads, 63 sectors
  footer[58] = 16;
  footer[59] = 63;
  footer.writeUInt32BE(opts.diskType ?? 4, 60);
  footer.writeUInt32BE(checksum(footer), 64);

  const dyn = Buffer.alloc(1024);
  dyn.write('cxsparse', 0, 'latin1');
  dyn.writeBigUInt64BE(0xffffffffffffffffn, 8);
  dyn.writeBigUInt64BE(opts.tableOffset ?? 1536n, 16);
  dyn.writeUInt32BE(0x00010000, 24);
  dyn.writeUInt32BE(opts.maxTableEntries ?? 1, 28);
  dyn.writeUInt32BE(opts.blockSize ?? 0x200000, 32);
  utf16(opts.parentName ?? '').swap16().copy(dyn, 64, 0, 512); // parent name is UTF-16BE
  let at = dataStart;
  locators.forEach((l, i) => {
    const e = 576 + i * 24;
    dyn.write(l.code.padEnd(4, ' '), e, 'latin1');
    dyn.writeUInt32BE(Math.ceil(l.data.length / 512) * 512, e + 4);
    dyn.writeUInt32BE(l.length ?? l.data.length, e + 8);
    dyn.writeBigUInt64BE(l.offset ?? BigInt(at), e + 16);
    l.data.copy(img, at);
    at += Math.ceil(l.data.length / 512) * 512;
  });
  dyn.writeUInt32BE(checksum(dyn), 36);
  footer.copy(img, 0);
  dyn.copy(img, 512);
  img.fill(0xff, 1536, 1536 + 512); // BAT: every block unallocated
  footer.copy(img, img.length - 512);
  return img;
}

// VHDX: GUIDs of the metadata region, of the file-parameters item and of the parent locator.
const guid = (s: string): Buffer => {
  const h = s.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  // Mixed-endian GUID: the first three groups are little-endian.
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
};
const METADATA_REGION = guid('8b7ca206-4790-4b9a-b8fe-575f050f886e');
const FILE_PARAMETERS = guid('caa16737-fa36-4d43-b3b6-33f0aa44e76b');
const PARENT_LOCATOR_ITEM = guid('a8d35f2d-b30b-454d-abf7-d3d84834ab0c');
const VHDX_LOCATOR_TYPE = guid('b04aefb7-d19e-4a81-b789-25b8e9445913');
const BAT_REGION = guid('2dc27766-f623-4200-9d64-115e9bfd4a08');

function regions(img: Buffer): { id: Buffer; offset: number; length: number; at: number }[] {
  const table = 192 * 1024;
  const count = img.readUInt32LE(table + 8);
  return Array.from({ length: count }, (_, i) => {
    const at = table + 16 + i * 32;
    return { id: img.subarray(at, at + 16), offset: Number(img.readBigUInt64LE(at + 16)), length: img.readUInt32LE(at + 24), at };
  });
}

/** Adds a parent locator (key/value pairs) to a qemu-made dynamic VHDX and sets HasParent. */
export function vhdxWithParent(base: Buffer, pairs: [string, string][]): Buffer {
  const img = Buffer.from(base);
  const meta = regions(img).find((r) => r.id.equals(METADATA_REGION))!;
  const table = meta.offset;
  const count = img.readUInt16LE(table + 10);
  for (let i = 0; i < count; i++) {
    const e = table + 32 + i * 32;
    if (img.subarray(e, e + 16).equals(FILE_PARAMETERS)) {
      const item = table + img.readUInt32LE(e + 16);
      img.writeUInt32LE(img.readUInt32LE(item + 4) | 2, item + 4); // flags: HasParent
    }
  }
  // The locator: header, key/value entries, then the UTF-16LE strings.
  const strings: Buffer[] = [];
  const entries = Buffer.alloc(12 * pairs.length);
  let cursor = 20 + entries.length;
  pairs.forEach(([k, v], i) => {
    const key = utf16(k);
    const value = utf16(v);
    entries.writeUInt32LE(cursor, i * 12);
    entries.writeUInt32LE(cursor + key.length, i * 12 + 4);
    entries.writeUInt16LE(key.length, i * 12 + 8);
    entries.writeUInt16LE(Math.min(value.length, 0xffff), i * 12 + 10);
    strings.push(key, value);
    cursor += key.length + value.length;
  });
  const head = Buffer.alloc(20);
  VHDX_LOCATOR_TYPE.copy(head, 0);
  head.writeUInt16LE(pairs.length, 18);
  const locator = Buffer.concat([head, entries, ...strings]);
  const itemOffset = 0x10000 + 0x8000; // inside the metadata region, past qemu's items
  locator.copy(img, table + itemOffset, 0, Math.min(locator.length, meta.length - itemOffset));
  const e = table + 32 + count * 32;
  PARENT_LOCATOR_ITEM.copy(img, e);
  img.writeUInt32LE(itemOffset, e + 16);
  img.writeUInt32LE(locator.length, e + 20);
  img.writeUInt32LE(4, e + 24); // IsRequired
  img.writeUInt16LE(count + 1, table + 10);
  return img;
}

/** Moves the BAT or the metadata region past the end of the file (region table CRC fixed up). */
export function vhdxRegionPastEof(base: Buffer, which: 'bat' | 'metadata', crc32c: (b: Buffer) => number): Buffer {
  const img = Buffer.from(base);
  for (const tableAt of [192 * 1024, 256 * 1024]) {
    const count = img.readUInt32LE(tableAt + 8);
    for (let i = 0; i < count; i++) {
      const at = tableAt + 16 + i * 32;
      const id = img.subarray(at, at + 16);
      if (id.equals(which === 'bat' ? BAT_REGION : METADATA_REGION)) img.writeBigUInt64LE(BigInt(img.length + 1024 * 1024 * 1024), at + 16);
    }
    img.writeUInt32LE(0, tableAt + 4);
    img.writeUInt32LE(crc32c(img.subarray(tableAt, tableAt + 64 * 1024)), tableAt + 4);
  }
  return img;
}
