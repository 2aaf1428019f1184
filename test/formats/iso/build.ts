// Builds CD/DVD images byte by byte: 32 KiB of system area, then the volume descriptors from
// sector 16 on (ISO 9660: primary descriptor "CD001" type 1 and the set terminator type 255;
// UDF: the volume recognition sequence BEA01, NSR02/NSR03, TEA01), then some file data.
const SECTOR = 2048;

function descriptor(type: number, id: string): Buffer {
  const d = Buffer.alloc(SECTOR);
  d[0] = type;
  d.write(id, 1, 'latin1');
  d[6] = 1;
  return d;
}

function bothEndian32(d: Buffer, at: number, v: number): void {
  d.writeUInt32LE(v, at);
  d.writeUInt32BE(v, at + 4);
}

export function iso9660(sectors: number, opts: { mbr?: boolean } = {}): Buffer {
  const system = Buffer.alloc(16 * SECTOR);
  if (opts.mbr) {
    // An isohybrid-style MBR: one bootable partition covering the image.
    system[446] = 0x80;
    system[446 + 4] = 0x17;
    system.writeUInt32LE(0, 446 + 8);
    system.writeUInt32LE((sectors * SECTOR) / 512, 446 + 12);
    system[510] = 0x55;
    system[511] = 0xaa;
  }
  const pvd = descriptor(1, 'CD001');
  pvd.write('INSTAR_TEST'.padEnd(32, ' '), 40, 'latin1');
  bothEndian32(pvd, 80, sectors);
  pvd.writeUInt16LE(SECTOR, 128);
  pvd.writeUInt16BE(SECTOR, 130);
  const end = descriptor(255, 'CD001');
  const data = Buffer.alloc((sectors - 18) * SECTOR);
  for (let i = 0; i < data.length; i += 4096) data.write(`file data at ${i}\n`, i, 'latin1');
  return Buffer.concat([system, pvd, end, data]);
}

export function udf(sectors: number, nsr = 'NSR02'): Buffer {
  const system = Buffer.alloc(16 * SECTOR);
  const vrs = Buffer.concat([descriptor(0, 'BEA01'), descriptor(0, nsr), descriptor(0, 'TEA01')]);
  const data = Buffer.alloc((sectors - 19) * SECTOR, 0x5a);
  return Buffer.concat([system, vrs, data]);
}
