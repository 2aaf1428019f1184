// Builds small qcow2 images byte by byte for the hostile-header tests.

export const CLUSTER = 0x10000;

/** A valid, empty v3 image of 1 MiB: header, refcount table, one refcount block, an L1 table. */
export function craftQcow2(): Buffer {
  const b = Buffer.alloc(4 * CLUSTER);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(3, 4); // version
  b.writeUInt32BE(16, 20); // cluster_bits
  b.writeBigUInt64BE(1n << 20n, 24); // size
  b.writeUInt32BE(1, 36); // l1_size
  b.writeBigUInt64BE(BigInt(3 * CLUSTER), 40); // l1_table_offset
  b.writeBigUInt64BE(BigInt(CLUSTER), 48); // refcount_table_offset
  b.writeUInt32BE(1, 56); // refcount_table_clusters
  b.writeUInt32BE(4, 96); // refcount_order
  b.writeUInt32BE(112, 100); // header_length
  b.writeBigUInt64BE(BigInt(2 * CLUSTER), CLUSTER); // refcount table → block
  for (let i = 0; i < 4; i++) b.writeUInt16BE(1, 2 * CLUSTER + i * 2);
  return b;
}

export function u32(b: Buffer, at: number, v: number): Buffer {
  b.writeUInt32BE(v >>> 0, at);
  return b;
}

export function u64(b: Buffer, at: number, v: bigint): Buffer {
  b.writeBigUInt64BE(v, at);
  return b;
}

/** Writes header extensions (magic, length, data padded to 8) from offset 112, then an end marker. */
export function withExtensions(b: Buffer, exts: { magic: number; data: Buffer; len?: number }[]): Buffer {
  let at = 112;
  for (const e of exts) {
    b.writeUInt32BE(e.magic, at);
    b.writeUInt32BE(e.len ?? e.data.length, at + 4);
    e.data.copy(b, at + 8);
    at += 8 + Math.ceil(e.data.length / 8) * 8;
  }
  b.writeBigUInt64BE(0n, at);
  return b;
}

/** One 48-byte feature name table entry. */
export function featureEntry(type: number, bit: number, name: string): Buffer {
  const e = Buffer.alloc(48);
  e[0] = type;
  e[1] = bit;
  e.write(name, 2, 'latin1');
  return e;
}
