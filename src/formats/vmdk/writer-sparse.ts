// One sparse extent being written, as qemu's vmdk driver writes it under qemu-img convert.
// Create preallocated every grain table (in both grain directories), so a write only allocates
// grains: the next grain at the end of the file, written whole (the guest data and zeros around
// it, as get_whole_cluster does without a backing file), and its entry set in the grain table and
// in the redundant one. qemu writes each 4-byte entry as it allocates; the writer keeps the
// tables in memory and writes the runs of entries it set in finish(), which leaves the same bytes
// and touches the same file blocks. A streamOptimized extent compresses each grain instead: a
// marker (its first sector and the deflated length) and the zlib stream, packed one after the
// other; qemu first zero-fills a whole grain at the new position, so the file ends a grain after
// the last grain's start.
import { deflateSync } from 'node:zlib';
import { unitPieces } from '../bytes.ts';
import { ImageError, type BlockDevice } from '../types.ts';
import { sparseGeometry, type SparseGeometry } from './create.ts';
import { writableOutput } from '../writer-checks.ts';

const SECTOR = 512;
export const GRAIN = 128 * SECTOR;
const GTES_PER_GT = 512;
const MARKER = 12;
/** qemu's VMDK_EXTENT_MAX_SECTORS: grain entries are 32-bit sector numbers. */
const MAX_SECTOR = 2 ** 32;

export interface ExtentWriter {
  /** Guest bytes at an offset inside the extent (any length within it). */
  write(data: Uint8Array, offset: number): void;
  finish(): void;
}

export class SparseExtentWriter implements ExtentWriter {
  protected readonly put: (buf: Uint8Array, pos: number) => void;
  protected readonly geometry: SparseGeometry;
  /** The grains allocated here (grain index → sector): the only entries finish() writes. A map,
   *  not a table of every grain: a 2 TiB disk has 32 Mi grains and a copy may allocate few. */
  protected readonly entries = new Map<number, number>();
  /** qemu's next_cluster_sector: the file's length in sectors, rounded up to a grain. */
  protected nextSector: number;

  constructor(protected readonly dev: BlockDevice, readonly bytes: number) {
    this.put = writableOutput(dev);
    this.geometry = sparseGeometry(bytes);
    // The file as create left it ends at the first grain.
    this.nextSector = this.geometry.grainOffset;
  }

  protected takeSectors(count: number): number {
    const sector = this.nextSector;
    if (sector + count > MAX_SECTOR) throw new ImageError('instar refuses a VMDK grain past the 32-bit sector range');
    this.nextSector += count;
    return sector;
  }

  write(data: Uint8Array, offset: number): void {
    for (const { index: grain, within: inGrain, piece } of unitPieces(data, offset, GRAIN)) {
      const sector = this.entries.get(grain);
      if (sector !== undefined) {
        this.put(piece, sector * SECTOR + inGrain);
        continue;
      }
      const whole = new Uint8Array(GRAIN);
      whole.set(piece, inGrain);
      const fresh = this.takeSectors(128);
      this.put(whole, fresh * SECTOR);
      this.entries.set(grain, fresh);
    }
  }

  /** The runs of entries set, into the grain tables of both directories. */
  finish(): void {
    const grains = [...this.entries.keys()].sort((a, b) => a - b);
    const g = this.geometry;
    for (let i = 0; i < grains.length; ) {
      // A run of consecutive grains within one grain table.
      let j = i + 1;
      while (j < grains.length && grains[j] === grains[j - 1] + 1 && grains[j] % GTES_PER_GT !== 0) j++;
      const first = grains[i];
      const table = Math.floor(first / GTES_PER_GT);
      const run = Buffer.alloc((j - i) * 4);
      for (let k = i; k < j; k++) run.writeUInt32LE(this.entries.get(grains[k])!, (k - i) * 4);
      for (const directory of [g.gdOffset, g.rgdOffset]) {
        const tableSector = directory + g.gdSectors + table * g.gtSectors;
        this.put(run, tableSector * SECTOR + (first % GTES_PER_GT) * 4);
      }
      i = j;
    }
  }
}

/** A streamOptimized extent: each grain deflated behind a marker, in arrival order. */
export class StreamExtentWriter extends SparseExtentWriter {
  /** The grain being gathered: compressed once the writes move past it (or at finish). */
  private pending: { grain: number; buf: Uint8Array } | undefined;
  /** Where the last grain's zero-fill ends, and its compressed data. */
  private fillEnd = 0;
  private dataEnd = 0;

  override write(data: Uint8Array, offset: number): void {
    for (const { index: grain, within: inGrain, piece } of unitPieces(data, offset, GRAIN)) {
      if (this.pending?.grain !== grain) {
        this.flush();
        // The disk's last grain is compressed at the length the disk leaves it, as qemu does.
        this.pending = { grain, buf: new Uint8Array(Math.min(GRAIN, this.bytes - grain * GRAIN)) };
      }
      this.pending!.buf.set(piece, inGrain);
    }
  }

  private flush(): void {
    const p = this.pending;
    this.pending = undefined;
    if (!p) return;
    if (this.entries.has(p.grain)) throw new ImageError('Could not write to allocated cluster for streamOptimized');
    const deflated = deflateSync(p.buf);
    const record = Buffer.alloc(MARKER + deflated.length);
    record.writeBigUInt64LE(BigInt((p.grain * GRAIN) / SECTOR), 0);
    record.writeUInt32LE(deflated.length, 8);
    record.set(deflated, MARKER);
    const start = this.nextSector * SECTOR;
    this.put(record, start);
    // qemu's next grain starts at the sector after this one's data, over this grain's zero-fill.
    this.fillEnd = start + GRAIN;
    this.dataEnd = start + record.length;
    this.nextSector = Math.ceil(this.dataEnd / SECTOR);
    if (this.nextSector > MAX_SECTOR) throw new ImageError('instar refuses a VMDK grain past the 32-bit sector range');
    this.entries.set(p.grain, start / SECTOR);
  }

  override finish(): void {
    this.flush();
    // The last grain's zero-fill beyond its data, then the end of file aligned to a sector (the
    // zero-length compressed write that ends qemu-img convert).
    const end = Math.ceil(Math.max(this.fillEnd, this.dataEnd) / SECTOR) * SECTOR;
    if (end > this.dataEnd && this.dataEnd > 0) this.put(new Uint8Array(end - this.dataEnd), this.dataEnd);
    super.finish();
  }
}
