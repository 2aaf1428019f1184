// The L2 entry decoder works on two 32-bit halves to avoid a BigInt per cluster; it must say
// exactly what the 64-bit reading of docs/interop/qcow2.txt says, for every bit pattern,
// offsets past 2^53 included (there the double must round as Number(bigint) does).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../fuzz/prng.ts';
import { compressedSpan, entryBigInt, hostLowBits, hostOffsetOf, unitTypeOf, type UnitType } from '../../../src/formats/qcow2/l2-entry.ts';

const OFFSET_MASK = 0x00fffffffffffe00n;

/** The 64-bit reading, written independently of the decoder (qemu's qcow2_get_subcluster_type). */
function referenceType(entry: bigint, bitmap: bigint, sub: number, extended: boolean, dataFile: boolean): UnitType {
  if (entry & (1n << 62n)) return 'compressed';
  const host = entry & OFFSET_MASK;
  if (!extended && entry & 1n) return host === 0n ? 'zero-plain' : 'zero-alloc';
  const allocated = host !== 0n || (dataFile && (entry & (1n << 63n)) !== 0n);
  if (!extended) return allocated ? 'normal' : 'unallocated-plain';
  const zero = (bitmap >> BigInt(32 + sub)) & 1n;
  const alloc = (bitmap >> BigInt(sub)) & 1n;
  if (allocated) {
    if ((bitmap >> 32n) & bitmap & 0xffffffffn) return 'invalid';
    if (zero) return 'zero-alloc';
    return alloc ? 'normal' : 'unallocated-alloc';
  }
  if (bitmap & 0xffffffffn) return 'invalid';
  return zero ? 'zero-plain' : 'unallocated-plain';
}

/** Halves that hit the interesting bits (flags, the top offset bits, all-zero halves) often. */
const SPECIAL = [0, 1, 0x200, 0xfffffe00, 0x80000000, 0x40000000, 0xc0000000, 0x00200000, 0x001fffff, 0x00ffffff, 0xffffffff];
const half = (rng: Rng): number => (rng.next() % 3 === 0 ? SPECIAL[rng.next() % SPECIAL.length] : rng.next());

test('L2 entry halves decode as the 64-bit entry does (type, host offset, alignment)', () => {
  const rng = new Rng(20261127);
  for (let i = 0; i < 50000; i++) {
    const [hi, lo, zeroBits, allocBits] = [half(rng), half(rng), half(rng), half(rng)];
    const sub = rng.next() % 32;
    const extended = (rng.next() & 1) === 1;
    const dataFile = (rng.next() & 1) === 1;
    const entry = (BigInt(hi) << 32n) | BigInt(lo);
    const bitmap = (BigInt(zeroBits) << 32n) | BigInt(allocBits);
    const what = `case ${i}: entry ${entry.toString(16)} bitmap ${bitmap.toString(16)} sub ${sub} extended ${extended} dataFile ${dataFile}`;
    assert.equal(entryBigInt(hi, lo), entry, what);
    assert.equal(unitTypeOf(hi, lo, zeroBits, allocBits, sub, extended, dataFile), referenceType(entry, bitmap, sub, extended, dataFile), what);
    assert.equal(hostOffsetOf(hi, lo), Number(entry & OFFSET_MASK), what);
    for (const cs of [512, 65536, 2 * 1024 * 1024]) assert.equal(hostLowBits(lo) % cs === 0, (entry & OFFSET_MASK) % BigInt(cs) === 0n, what);
  }
});

test('host offsets past 2^53 round as Number(bigint) does, and stay past the end of any file', () => {
  // Bit 53 and the lowest offset bit set: not representable; the double must be the nearest one.
  const hi = 0x00200000;
  const lo = 0x00000200;
  const exact = (BigInt(hi) << 32n) | BigInt(lo);
  assert.equal(hostOffsetOf(hi, lo), Number(exact));
  assert.ok(hostOffsetOf(hi, lo) >= 2 ** 53);
  assert.equal(hostOffsetOf(0x00ffffff, 0xfffffe00), Number(OFFSET_MASK));
});

test('a compressed descriptor gives the 64-bit reading\'s offset and length, for every cluster size', () => {
  const rng = new Rng(7);
  for (let i = 0; i < 20000; i++) {
    const [hi, lo] = [half(rng), half(rng)];
    const clusterBits = 9 + (rng.next() % 13);
    const entry = (BigInt(hi) << 32n) | BigInt(lo);
    // qemu's qcow2_parse_compressed_l2_entry, in 64 bits.
    const shift = BigInt(62 - (clusterBits - 8));
    const offset = entry & ((1n << shift) - 1n);
    const sectors = Number((entry >> shift) & ((1n << BigInt(clusterBits - 8)) - 1n)) + 1;
    const span = compressedSpan(hi, lo, clusterBits);
    const what = `case ${i}: entry ${entry.toString(16)} cluster_bits ${clusterBits}`;
    assert.equal(span.hostOffset, Number(offset), what);
    assert.equal(span.length, sectors * 512 - Number(offset % 512n), what);
    assert.ok(span.length > 0 && span.length <= 2 * 2 ** clusterBits, what);
  }
});
