// One sparse extent (hosted sparse, stream-optimized or COWD): its grain directory, grain tables
// and grains. Every size read from the header is checked as qemu checks it, and memory is bounded
// by the file: only the part of the grain directory that lies inside the file is kept.
import { inflateSync } from 'node:zlib';
import { ImageError, type BlockDevice } from '../types.ts';
import { readError } from './errors.ts';
import { outOfRange, readZeroPadded, toInt64, u32le } from './io.ts';

/** qemu refuses grains above 1 GiB and directories above 32 Mi entries. */
const MAX_CLUSTER_SECTORS = 0x200000n;
const MAX_L1_ENTRIES = 32 * 1024 * 1024;
const L2_CACHE_TABLES = 64;
/** Zero padding given to a compressed grain that runs past end of file (see readCompressed). */
const MAX_COMPRESSED_PADDING = 1024 * 1024;

export interface SparseGeometry {
  /** Sectors covered (a signed 64-bit value, as qemu keeps it). */
  sectors: bigint;
  l1Offset: bigint;
  l1BackupOffset: bigint;
  l1Size: number;
  l2Size: number;
  clusterSectors: bigint;
  compressed: boolean;
  hasMarker: boolean;
  hasZeroGrain: boolean;
}

export const enum GrainStatus {
  Data,
  Unallocated,
  Zeroed,
  Error,
}

/** What the image needs of an extent made of grains (hosted sparse, COWD, seSparse). */
export interface GrainExtent {
  readonly flat: false;
  /** The file the grains are in. */
  readonly dev: BlockDevice;
  readonly sectors: bigint;
  readonly clusterBytes: number;
  readonly compressed: boolean;
  /** Host offset of the grain after lookup() returned Data (-1: a position qemu cannot read). */
  hostOffset: number;
  /**
   * After lookup(): bytes from the looked-up offset that share its answer for certain — to the
   * end of its grain, or of a whole directory entry's span when that entry is empty.
   */
  run: number;
  lookup(offset: number): GrainStatus;
  readGrain(out: Uint8Array, hostOffset: number, inGrain: number): void;
}

export class SparseExtent implements GrainExtent {
  readonly flat = false;
  readonly sectors: bigint;
  readonly clusterBytes: number;
  readonly compressed: boolean;
  hostOffset = 0;
  run = 0;
  private readonly l1: Uint32Array;
  private readonly l1Size: number;
  private readonly l2Size: number;
  private readonly l1EntrySectors: number;
  private readonly clusterSectors: number;
  private readonly hasMarker: boolean;
  private readonly hasZeroGrain: boolean;
  private readonly l2Cache = new Map<number, GrainTable>();
  /** Whether one directory entry covers exactly one table of grains (its product did not wrap). */
  private readonly tablesAligned: boolean;
  private lastGrain?: { pos: number; bytes: Uint8Array };

  constructor(readonly dev: BlockDevice, readonly fileLabel: string, g: SparseGeometry) {
    if (g.clusterSectors > MAX_CLUSTER_SECTORS) throw new ImageError('Invalid granularity, image may be corrupt');
    if (g.l1Size > MAX_L1_ENTRIES) throw new ImageError('L1 size too big');
    this.sectors = g.sectors;
    this.clusterSectors = Number(g.clusterSectors);
    this.clusterBytes = this.clusterSectors * 512;
    // qemu keeps this product in a uint32_t.
    this.l1EntrySectors = Number((BigInt(g.l2Size) * g.clusterSectors) & 0xffffffffn);
    this.tablesAligned = BigInt(this.l1EntrySectors) === BigInt(g.l2Size) * g.clusterSectors;
    this.l1Size = g.l1Size;
    this.l2Size = g.l2Size;
    this.compressed = g.compressed;
    this.hasMarker = g.hasMarker;
    this.hasZeroGrain = g.hasZeroGrain;
    this.l1 = this.readDirectory(g.l1Offset, 'l1 table');
    if (g.l1BackupOffset !== 0n) this.readDirectory(g.l1BackupOffset, 'l1 backup table');
  }

  /** The grain directory as far as the file holds it; entries past end of file are zero. */
  private readDirectory(pos: bigint, what: string): Uint32Array {
    const bytes = this.l1Size * 4;
    if (outOfRange(pos, bytes)) throw new ImageError(`Could not read ${what} from extent '${this.fileLabel}': Input/output error`, 'EIO');
    const inFile = pos < BigInt(this.dev.size) ? Number(BigInt(this.dev.size) - pos) : 0;
    const kept = Math.min(bytes, Math.ceil(inFile / 4) * 4);
    const buf = new Uint8Array(kept);
    readZeroPadded(this.dev, buf, pos);
    return u32le(buf);
  }

  /** Status of the grain holding extent-relative byte `offset`; sets hostOffset for Data. */
  lookup(offset: number): GrainStatus {
    if (this.l1EntrySectors === 0 || this.clusterSectors === 0) {
      this.run = Number.MAX_SAFE_INTEGER;
      return GrainStatus.Error;
    }
    this.run = this.clusterBytes - (offset % this.clusterBytes);
    const sector = Math.floor(offset / 512);
    const l1Index = Math.floor(sector / this.l1EntrySectors);
    if (l1Index >= this.l1Size) return GrainStatus.Error;
    const span = this.l1EntrySectors * 512;
    if (l1Index >= this.l1.length) {
      // Past the end of the file the directory reads as zeros: no tables to its end.
      this.run = Math.min(Number.MAX_SAFE_INTEGER, this.l1Size * span) - offset;
      return GrainStatus.Unallocated;
    }
    if (this.l1[l1Index] === 0) {
      this.run = span - (offset % span);
      return GrainStatus.Unallocated;
    }
    const l2Offset = this.l1[l1Index];
    const table = this.grainTable(l2Offset);
    const index = Math.floor(sector / this.clusterSectors) % this.l2Size;
    const entry = table.entries[index];
    const status = this.hasZeroGrain && entry === 1 ? GrainStatus.Zeroed : entry === 0 ? GrainStatus.Unallocated : GrainStatus.Data;
    if (status === GrainStatus.Data) {
      this.hostOffset = entry * 512;
      return status;
    }
    // A run of equal empty entries answers alike to its last grain. Only when a directory entry
    // spans exactly its table: otherwise (a wrapped product) the table's indices do not follow
    // the directory's spans, and each grain is looked up on its own.
    if (this.tablesAligned) this.run += (table.runEnds()[index] - index - 1) * this.clusterBytes;
    return status;
  }

  private grainTable(l2Offset: number): GrainTable {
    const hit = this.l2Cache.get(l2Offset);
    if (hit) {
      this.l2Cache.delete(l2Offset);
      this.l2Cache.set(l2Offset, hit);
      return hit;
    }
    const buf = new Uint8Array(this.l2Size * 4);
    readZeroPadded(this.dev, buf, l2Offset * 512);
    const table = new GrainTable(u32le(buf));
    if (this.l2Cache.size >= L2_CACHE_TABLES) this.l2Cache.delete(this.l2Cache.keys().next().value as number);
    this.l2Cache.set(l2Offset, table);
    return table;
  }

  /** Copies `out.length` bytes at `inGrain` of the grain stored at `hostOffset`. */
  readGrain(out: Uint8Array, hostOffset: number, inGrain: number): void {
    if (!this.compressed) {
      readZeroPadded(this.dev, out, hostOffset + inGrain);
      return;
    }
    const grain = this.readCompressed(hostOffset);
    if (inGrain + out.length > grain.length) throw readError('EINVAL');
    out.set(grain.subarray(inGrain, inGrain + out.length));
  }

  /**
   * A compressed grain: [lba u64, size u32, zlib data] with markers, else zlib data alone. qemu
   * reads two grains' worth and inflates into one grain, failing on anything else. Past end of
   * file qemu sees zeros; we give at most 1 MiB of them rather than two whole grains.
   */
  private readCompressed(pos: number): Uint8Array {
    if (this.lastGrain?.pos === pos) return this.lastGrain.bytes;
    const window = this.clusterBytes * 2;
    let dataPos = pos;
    let dataLen = this.clusterBytes;
    if (this.hasMarker) {
      const marker = new Uint8Array(12);
      readZeroPadded(this.dev, marker, pos);
      dataLen = new DataView(marker.buffer).getUint32(8, true);
      dataPos = pos + 12;
      // The marker sits inside qemu's two-grain window too.
      if (dataLen === 0 || dataLen > window) throw readError('EINVAL');
      dataLen = Math.min(dataLen, window - 12);
    }
    const inFile = Math.max(0, Math.min(dataLen, this.dev.size - dataPos));
    const input = new Uint8Array(Math.min(dataLen, inFile + MAX_COMPRESSED_PADDING));
    readZeroPadded(this.dev, input, dataPos);
    let bytes: Uint8Array;
    try {
      // One output chunk of a grain: no concatenation of 16 KiB pieces afterwards.
      bytes = inflateSync(input, { maxOutputLength: this.clusterBytes, chunkSize: Math.max(64, this.clusterBytes) });
    } catch {
      throw readError('EINVAL');
    }
    this.lastGrain = { pos, bytes };
    return bytes;
  }
}

/** A grain table and, computed once when first needed, where each run of equal entries ends. */
class GrainTable {
  private ends?: Uint32Array;

  constructor(readonly entries: Uint32Array) {}

  /** runEnds()[i]: the index after the last of the entries equal to entries[i] from i on. */
  runEnds(): Uint32Array {
    if (this.ends) return this.ends;
    const e = this.entries;
    const ends = new Uint32Array(e.length);
    // One pass from the end: a run ends where the next entry differs.
    for (let i = e.length - 1; i >= 0; i--) ends[i] = i + 1 < e.length && e[i + 1] === e[i] ? ends[i + 1] : i + 1;
    this.ends = ends;
    return ends;
  }
}

/** A signed byte offset from a sector count read as uint64, wrapped as qemu's `<< 9` wraps. */
export function sectorsToBytes(sectors: bigint): bigint {
  return toInt64(sectors << 9n);
}
