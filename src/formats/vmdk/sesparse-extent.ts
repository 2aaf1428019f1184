// ESXi "seSparse" extents (named SESPARSE in a descriptor): a constant header, a volatile header,
// then 64-bit grain directory and grain table entries whose top nibble says what the entry is.
// Read-only in qemu; checked as strictly as qemu checks it (the format is not documented).
import { ImageError, type BlockDevice } from '../types.ts';
import { readError } from './errors.ts';
import { outOfRange, readZeroPadded, toInt64 } from './io.ts';
import { GrainStatus } from './sparse-extent.ts';

const CONST_MAGIC = 0xcafebaben;
const VOLATILE_MAGIC = 0xcafecafen;
const VERSION = 0x0000000200000001n;
const MAX_L1_ENTRIES = 32 * 1024 * 1024;
const L2_ENTRIES = 4096;
const L2_CACHE_TABLES = 16;
const GRAIN_SECTORS = 8n;
const MAX_LENGTH = (1n << 63n) - (1n << 30n);

const hex16 = (v: bigint) => '0x' + v.toString(16).padStart(16, '0');

export class SeSparseExtent {
  readonly flat = false;
  readonly compressed = false;
  readonly clusterBytes = 4096;
  readonly sectors: bigint;
  hostOffset = 0;
  run = 0;
  private readonly l1: BigUint64Array;
  private readonly l1Size: number;
  private readonly tablesOffset: bigint;
  private readonly grainsOffset: bigint;
  private readonly l2Cache = new Map<number, BigUint64Array>();

  constructor(readonly dev: BlockDevice, fileLabel: string, writable: boolean) {
    if (writable) throw new ImageError('No write support for seSparse images available');
    const h = new Uint8Array(512);
    readZeroPadded(dev, h, 0);
    const dv = new DataView(h.buffer);
    const u64 = (o: number) => dv.getBigUint64(o, true);
    if (u64(0) !== CONST_MAGIC) throw new ImageError(`Bad const header magic: ${hex16(u64(0))}`);
    if (u64(8) !== VERSION) throw new ImageError(`Unsupported version: ${hex16(u64(8))}`);
    if (u64(24) !== GRAIN_SECTORS) throw new ImageError(`Unsupported grain size: ${u64(24)}`);
    if (u64(32) !== 64n) throw new ImageError(`Unsupported grain table size: ${u64(32)}`);
    if (u64(40) !== 0n) throw new ImageError(`Unsupported flags: ${hex16(u64(40))}`);
    const reserved = [48, 56, 64, 72].map(u64);
    if (reserved.some((r) => r !== 0n)) throw new ImageError(`Unsupported reserved bits: ${reserved.map(hex16).join(' ')}`);
    if (h.subarray(208).some((b) => b !== 0)) throw new ImageError('Unsupported non-zero const header padding');
    this.checkVolatileHeader(toInt64(u64(80) * 512n), fileLabel);
    this.sectors = toInt64(u64(16));
    this.tablesOffset = u64(144);
    this.grainsOffset = u64(192);
    // qemu passes the entry count through a uint32_t.
    this.l1Size = Number(((u64(136) * 512n) / 8n) & 0xffffffffn);
    if (this.l1Size > MAX_L1_ENTRIES) throw new ImageError('L1 size too big');
    this.l1 = this.readDirectory(toInt64(u64(128) * 512n), fileLabel);
  }

  private checkVolatileHeader(pos: bigint, fileLabel: string): void {
    if (outOfRange(pos, 512)) throw new ImageError(`Could not read volatile header from file '${fileLabel}': Input/output error`, 'EIO');
    const h = new Uint8Array(512);
    readZeroPadded(this.dev, h, pos);
    const dv = new DataView(h.buffer);
    if (dv.getBigUint64(0, true) !== VOLATILE_MAGIC) throw new ImageError(`Bad volatile header magic: ${hex16(dv.getBigUint64(0, true))}`);
    if (dv.getBigUint64(24, true) !== 0n) throw new ImageError('Image is dirty, Replaying journal not supported');
    if (h.subarray(32).some((b) => b !== 0)) throw new ImageError('Unsupported non-zero volatile header padding');
  }

  /** The grain directory as far as the file holds it; entries past end of file are zero. */
  private readDirectory(pos: bigint, fileLabel: string): BigUint64Array {
    const bytes = this.l1Size * 8;
    if (outOfRange(pos, bytes)) throw new ImageError(`Could not read l1 table from extent '${fileLabel}': Input/output error`, 'EIO');
    const inFile = pos < BigInt(this.dev.size) ? Number(BigInt(this.dev.size) - pos) : 0;
    const buf = new Uint8Array(Math.min(bytes, Math.ceil(inFile / 8) * 8));
    readZeroPadded(this.dev, buf, pos);
    return entries(buf);
  }

  lookup(offset: number): GrainStatus {
    this.run = this.clusterBytes - (offset % this.clusterBytes);
    const sector = Math.floor(offset / 512);
    const l1Index = Math.floor(sector / (L2_ENTRIES * 8));
    if (l1Index >= this.l1Size) return GrainStatus.Error;
    const l1Entry = l1Index < this.l1.length ? this.l1[l1Index] : 0n;
    if (l1Entry === 0n) {
      const span = L2_ENTRIES * this.clusterBytes;
      this.run = span - (offset % span);
      return GrainStatus.Unallocated;
    }
    if ((l1Entry & 0xffffffff00000000n) !== 0x1000000000000000n) return GrainStatus.Error;
    const l2Sector = this.tablesOffset + ((l1Entry & 0xffffffffn) * BigInt(L2_ENTRIES * 8)) / 512n;
    if (l2Sector > 0xffffffffn) return GrainStatus.Error;
    const entry = this.grainTable(Number(l2Sector))[Math.floor(sector / 8) % L2_ENTRIES];
    switch (entry >> 60n) {
      case 0n:
        return entry === 0n ? GrainStatus.Unallocated : GrainStatus.Error;
      case 1n: // unmapped
      case 2n: // zero
        return GrainStatus.Zeroed;
      case 3n: {
        const index = ((entry & 0x0fff000000000000n) >> 48n) | ((entry & 0x0000ffffffffffffn) << 12n);
        const pos = toInt64((toInt64(this.grainsOffset + index * GRAIN_SECTORS)) << 9n);
        // A grain qemu's block layer would refuse to read is marked with -1 (read: EIO).
        this.hostOffset = pos < 0n || pos > MAX_LENGTH - 4096n ? -1 : Number(pos);
        return GrainStatus.Data;
      }
      default:
        return GrainStatus.Error;
    }
  }

  private grainTable(l2Sector: number): BigUint64Array {
    const hit = this.l2Cache.get(l2Sector);
    if (hit) {
      this.l2Cache.delete(l2Sector);
      this.l2Cache.set(l2Sector, hit);
      return hit;
    }
    const buf = new Uint8Array(L2_ENTRIES * 8);
    readZeroPadded(this.dev, buf, l2Sector * 512);
    const table = entries(buf);
    if (this.l2Cache.size >= L2_CACHE_TABLES) this.l2Cache.delete(this.l2Cache.keys().next().value as number);
    this.l2Cache.set(l2Sector, table);
    return table;
  }

  readGrain(out: Uint8Array, hostOffset: number, inGrain: number): void {
    if (hostOffset < 0) throw readError('EIO');
    readZeroPadded(this.dev, out, hostOffset + inGrain);
  }
}

function entries(bytes: Uint8Array): BigUint64Array {
  const out = new BigUint64Array(bytes.length / 8);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  for (let i = 0; i < out.length; i++) out[i] = dv.getBigUint64(i * 8, true);
  return out;
}
