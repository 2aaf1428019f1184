// One qcow2 refcount entry inside a refcount block: refcount_bits = 2^refcount_order wide (1 to
// 64 bits), sub-byte entries packed from the least significant bit, wider ones big-endian (the
// qcow2 spec's get_refcount/set_refcount). Shared by the refcount model of the mutating planners
// and by check and its leak repair.

/** Entry `i` of `block`: a number while exact, a bigint beyond 2^53 (refcount_bits = 64 only). */
export function readRefcount(block: Buffer, i: number, bits: number): number | bigint {
  switch (bits) {
    case 1: return (block[i >> 3] >> (i & 7)) & 1;
    case 2: return (block[i >> 2] >> (2 * (i & 3))) & 3;
    case 4: return (block[i >> 1] >> (4 * (i & 1))) & 15;
    case 8: return block[i];
    case 16: return block.readUInt16BE(i * 2);
    case 32: return block.readUInt32BE(i * 4);
    default: {
      const hi = block.readUInt32BE(i * 8);
      const lo = block.readUInt32BE(i * 8 + 4);
      return hi < 0x200000 ? hi * 0x100000000 + lo : (BigInt(hi) << 32n) | BigInt(lo);
    }
  }
}

/** Sets entry `i` of `block` to `value`, which the caller has checked fits in `bits` bits. */
export function writeRefcount(block: Buffer, i: number, bits: number, value: number | bigint): void {
  if (bits < 8) {
    const perByte = 8 / bits;
    const at = Math.floor(i / perByte);
    const shift = bits * (i % perByte);
    const mask = (2 ** bits - 1) << shift;
    block[at] = (block[at] & ~mask) | (Number(value) << shift);
  } else if (bits === 8) block[i] = Number(value);
  else if (bits === 16) block.writeUInt16BE(Number(value), i * 2);
  else if (bits === 32) block.writeUInt32BE(Number(value), i * 4);
  else block.writeBigUInt64BE(BigInt(value), i * 8);
}
