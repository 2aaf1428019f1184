// One L2 entry decoded from its two 32-bit halves, without BigInt: a copy walks tens of
// thousands of entries per GiB, and a BigInt per entry was most of the cost of mapping one.
//
// Layout (docs/interop/qcow2.txt), big-endian 64-bit: bit 63 COPIED, bit 62 COMPRESSED, bits
// 9-55 the host offset, bit 0 ZERO (standard entries). Extended entries add a 64-bit bitmap:
// its high half says which subclusters read as zeros, its low half which are allocated.

/** qemu's QCow2SubclusterType: what one L2 entry says about one unit (cluster or subcluster). */
export type UnitType = 'normal' | 'zero-plain' | 'zero-alloc' | 'unallocated-plain' | 'unallocated-alloc' | 'compressed' | 'invalid';

const TWO_32 = 2 ** 32;
const HI_COPIED = 0x80000000;
const HI_COMPRESSED = 0x40000000;
/** Bits 32-55 of the host offset field, in the high half. */
const HI_OFFSET = 0x00ffffff;
/** Bits 9-31 of the host offset field, in the low half. */
const LO_OFFSET = 0xfffffe00;
const LO_ZERO = 1;

/** The entry's host offset field as a double: rounded as Number(bigint) rounds it, exact below 2^53. */
export function hostOffsetOf(hi: number, lo: number): number {
  // hi part * 2^32 is exact (24 bits); one correctly rounded addition, as Number(bigint) rounds.
  return (hi & HI_OFFSET) * TWO_32 + ((lo & LO_OFFSET) >>> 0);
}

/** Whether the host offset field is 0. */
function hostIsZero(hi: number, lo: number): boolean {
  return (hi & HI_OFFSET) === 0 && (lo & LO_OFFSET) === 0;
}

/** Low bits of the host offset field (exact), for alignment checks against sizes up to 2^31. */
export function hostLowBits(lo: number): number {
  return (lo & LO_OFFSET) >>> 0;
}

/** The whole 64-bit entry, for what still wants it (compressed descriptors, messages). */
export function entryBigInt(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/**
 * qemu's qcow2_get_subcluster_type for unit `sub` of an entry: no error of its own; `invalid`
 * checks the whole bitmap. `zeroBits`/`allocBits` are the bitmap halves (extended entries only).
 */
export function unitTypeOf(hi: number, lo: number, zeroBits: number, allocBits: number, sub: number, extended: boolean, dataFile: boolean): UnitType {
  if (hi & HI_COMPRESSED) return 'compressed';
  const noHost = hostIsZero(hi, lo);
  if (!extended && lo & LO_ZERO) return noHost ? 'zero-plain' : 'zero-alloc';
  // With an external data file, offset 0 is a real place in it when the entry is marked COPIED.
  const allocated = !noHost || (dataFile && (hi & HI_COPIED) !== 0);
  if (!extended) return allocated ? 'normal' : 'unallocated-plain';
  const zeroBit = (zeroBits >>> sub) & 1;
  if (allocated) {
    if ((zeroBits & allocBits) !== 0) return 'invalid';
    if (zeroBit) return 'zero-alloc';
    return (allocBits >>> sub) & 1 ? 'normal' : 'unallocated-alloc';
  }
  if (allocBits !== 0) return 'invalid';
  return zeroBit ? 'zero-plain' : 'unallocated-plain';
}

/** Types whose units keep a host allocation (their runs must be contiguous on the host). */
export function hasHost(type: UnitType): boolean {
  return type === 'normal' || type === 'zero-alloc' || type === 'unallocated-alloc';
}

/**
 * Where a compressed cluster's bytes are (docs/interop/qcow2.txt): the entry's low
 * 62 - (cluster_bits - 8) bits are the host offset, the next cluster_bits - 8 bits the number of
 * 512-byte sectors after the first; the bytes run from the offset to the end of the last sector.
 * The offset has at most 61 bits (always within qemu's request limit); past 2^53 it is rounded,
 * which cannot matter: it is past the end of any file either way.
 */
export function compressedSpan(hi: number, lo: number, clusterBits: number): { hostOffset: number; length: number } {
  const offsetBitsInHi = 62 - (clusterBits - 8) - 32;
  const hostOffset = (hi & (2 ** offsetBitsInHi - 1)) * TWO_32 + (lo >>> 0);
  const sectors = ((hi >>> offsetBitsInHi) & (2 ** (clusterBits - 8) - 1)) + 1;
  // At most 2^(cluster_bits-8) sectors: twice a cluster at most, so bounded.
  return { hostOffset, length: sectors * 512 - (lo & 511) };
}
