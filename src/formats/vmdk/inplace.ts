// convert -n into an existing sparse VMDK (monolithicSparse, twoGbMaxExtentSparse: extents laid
// end to end, the CID in the descriptor file), as qemu's vmdk driver writes into one. A
// write into an allocated grain goes in place; a missing grain is allocated at the end of the
// file (the file's length rounded up to a grain, as qemu's next_cluster_sector starts), written
// whole (zeros around the data, qemu's get_whole_cluster without a backing file), then its entry
// is set in the grain table and in the redundant one: data before the entries that point at it,
// so a cut anywhere leaves an image qemu opens. After the first write the descriptor gets a new
// random CID (cid-rewrite.ts). An image with a parent whose CID is not the parentCID it records
// takes writes into its allocated grains, but its first allocating write fails (qemu's
// get_whole_cluster: EINVAL) and ends the copy there. Without zeroed grains (the header's flag) qemu's write-zeroes
// falls back to writing zeros, which allocates grains; with them, the whole grains a zero
// request covers get the ZEROED entry, and its partial grains at either end get zeros written
// (the block layer splits the request at grain boundaries, and the driver takes only whole ones).
import { randomInt } from 'node:crypto';
import { readAt, unitPieces } from '../bytes.ts';
import { ImageError, type BlockDevice } from '../types.ts';
import { checkWriteRange, DriverWriteFailure, writableOutput } from '../writer-checks.ts';
import { CID_AREA_BYTES } from './descriptor.ts';
import { COMPRESSION_DEFLATE, FLAG_RGD, FLAG_ZERO_GRAIN, VMDK4_MAGIC, readVmdk4Header } from './header.ts';
import { cidUpdatable, rewriteCid } from './cid-rewrite.ts';
import { vmdkFlatInPlaceWriter } from './inplace-flat.ts';
import { VmdkImage } from './image.ts';

const SECTOR = 512;
/** The grain tables instar keeps in memory for one copy. */
const TABLES_LIMIT = 256 * 1024 * 1024;
/** Grain entries are 32-bit sector numbers. */
const MAX_SECTOR = 2 ** 32;
/** The grain entry of a zeroed grain (images with the zeroed-grain flag). */
const ZEROED = 1;

interface Layout {
  grainBytes: number;
  perTable: number;
  /** Sector of each grain table, and of its copy (0: no redundant directory). */
  tables: number[];
  backups: number[];
  /** Every grain entry, by grain index. */
  entries: Uint32Array;
  nextSector: number;
  zeroGrain: boolean;
}

/** One hosted sparse extent's writes; offsets are the extent's own, `start` its first guest byte. */
class ExtentInPlace {
  private readonly put: (buf: Uint8Array, pos: number) => void;

  /**
   * `parent`: reads the parent's bytes a new grain starts from (qemu's get_whole_cluster), or
   * 'mismatch' when its CID is not the recorded one; `written`: after each piece (the CID).
   */
  constructor(readonly dev: BlockDevice, readonly start: number, readonly size: number, readonly l: Layout, private readonly written: () => void, private readonly parent?: ((buf: Uint8Array, pos: number) => void) | 'mismatch') {
    this.put = writableOutput(dev);
  }

  /** A grain's entry set in its grain table and in the redundant one. */
  private setEntry(index: number, value: number): void {
    const entry = Buffer.alloc(4);
    entry.writeUInt32LE(value);
    const table = Math.floor(index / this.l.perTable);
    const at = (index % this.l.perTable) * 4;
    this.put(entry, this.l.tables[table] * SECTOR + at);
    if (this.l.backups.length > 0) this.put(entry, this.l.backups[table] * SECTOR + at);
    this.l.entries[index] = value;
  }

  zeroes(offset: number, length: number): void {
    const g = this.l.grainBytes;
    const end = offset + length;
    const first = Math.min(end, Math.ceil(offset / g) * g);
    const last = Math.max(first, Math.floor(end / g) * g);
    if (first > offset) this.write(new Uint8Array(first - offset), offset);
    for (let pos = first; pos < last; pos += g) {
      if (this.l.entries[pos / g] !== ZEROED) this.setEntry(pos / g, ZEROED);
      this.written();
    }
    if (end > last) this.write(new Uint8Array(end - last), last);
  }

  write(data: Uint8Array, offset: number): void {
    const { grainBytes, entries } = this.l;
    for (const { index, within, piece } of unitPieces(data, offset, grainBytes)) {
      let sector = entries[index];
      const zeroed = this.l.zeroGrain && sector === ZEROED;
      if (sector !== 0 && !zeroed) this.put(piece, sector * SECTOR + within);
      else {
        if (this.parent === 'mismatch') throw new ParentCidMismatch(this.start + index * grainBytes + within);
        sector = this.l.nextSector;
        if (sector + grainBytes / SECTOR > MAX_SECTOR) throw new ImageError('instar refuses a VMDK grain past the 32-bit sector range');
        this.l.nextSector += grainBytes / SECTOR;
        const whole = new Uint8Array(grainBytes);
        // A zeroed grain stays zeros around the data; an unallocated one starts as the parent's.
        if (this.parent && !zeroed) this.parent(whole, this.start + index * grainBytes);
        whole.set(piece, within);
        this.put(whole, sector * SECTOR);
        this.setEntry(index, sector);
      }
      this.written();
    }
  }
}

/** The extents laid end to end; qemu's CID update into the descriptor after the first piece. */
class SparseInPlace {
  private cidDone = false;
  /** qemu's write-zeroes requests, for images with zeroed grains only (in-place-copy.ts writes zeros otherwise). */
  readonly writeZeroes?: (offset: number, length: number) => void;
  readonly extents: ExtentInPlace[] = [];
  /** The first extent's grain: qemu's cluster size for the image (-c copies a cluster at a time). */
  grainBytes = 0;

  /** `descriptor`/`descOffset`: where the CID area is; `alignEnd`: -c's last, zero-length write. */
  constructor(private readonly descriptor: BlockDevice, private readonly descOffset: number, private readonly size: number, private readonly cid: () => number, zeroGrain: boolean, private readonly alignEnd: boolean) {
    if (zeroGrain) this.writeZeroes = (offset, length) => this.each(new Uint8Array(0), offset, length, (e, _, at, n) => e.zeroes(at, n));
  }

  /** qemu updates the CID once its first piece is written, writing its area up to the file's sector-rounded end. */
  readonly updateCid = (): void => {
    if (this.cidDone) return;
    const area = rewriteCid(readAt(this.descriptor, this.descOffset, CID_AREA_BYTES), this.cid());
    const length = Math.max(0, Math.min(CID_AREA_BYTES, Math.ceil(this.descriptor.size / SECTOR) * SECTOR - this.descOffset));
    writableOutput(this.descriptor)(area.subarray(0, length), this.descOffset);
    this.cidDone = true;
  };

  private each(data: Uint8Array, offset: number, length: number, act: (e: ExtentInPlace, piece: Uint8Array, at: number, n: number) => void): void {
    for (const e of this.extents) {
      const from = Math.max(offset, e.start);
      const to = Math.min(offset + length, e.start + e.size);
      if (from < to) act(e, data.subarray(Math.min(data.length, from - offset), Math.min(data.length, to - offset)), from - e.start, to - from);
    }
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.size);
    this.each(data, offset, data.length, (e, piece, at) => e.write(piece, at));
  }

  finish(): void {
    if (!this.alignEnd) return;
    for (const { dev } of this.extents) if (dev.size % SECTOR !== 0) dev.truncate?.(Math.ceil(dev.size / SECTOR) * SECTOR);
  }
}

export interface VmdkInPlaceOptions {
  /** Tests only: the CID to write instead of a random one. */
  cid?: number;
  /**
   * -c: qemu-img sends compressed writes, which a plain sparse extent takes as plain ones, then a
   * zero-length one that rounds the file's length up to a sector. Its requests are whole
   * clusters then, which only zeroed grains or a parent's data would tell apart: refused there.
   */
  compressed?: boolean;
}

type Refusal = { refused: string };

/** qemu's vmdk driver refuses to allocate a grain of an image whose parent's CID is not the parentCID it records. */
export class ParentCidMismatch extends DriverWriteFailure {
  /** `offset`: the first guest byte written into the grain that was to be allocated. */
  constructor(offset: number) {
    super('Invalid argument', 'EINVAL', offset);
  }
}
const refusal = (why: string): Refusal => ({ refused: `instar cannot convert into this vmdk image (${why}); nothing was written` });

/** A hosted sparse extent's tables, checked: metadata inside the file before the grains and apart, grains inside the file. */
function sparseLayout(dev: BlockDevice, hostsDescriptor: boolean): { layout: Layout; descOffset: number } | Refusal {
  if (readAt(dev, 0, 4).readUInt32BE(0) !== VMDK4_MAGIC) return refusal('an extent is not a hosted sparse extent');
  const h = readVmdk4Header(dev);
  if (h.compressAlgorithm === COMPRESSION_DEFLATE) return refusal('it is compressed');
  const zeroGrain = (h.flags & FLAG_ZERO_GRAIN) !== 0;
  const grainSectors = Number(h.granularity);
  const perTable = h.numGtesPerGt;
  const fileBytes = dev.size;
  const grains = Math.ceil(Number(h.capacity) / grainSectors);
  const tableCount = Math.ceil(grains / perTable);
  if (tableCount * perTable * 4 > TABLES_LIMIT) return refusal('its grain tables are too large');
  const descOffset = Number(h.descOffset) * SECTOR;
  const grainOffset = Number(h.grainOffset) * SECTOR;
  const gdBytes = tableCount * 4;
  const spans: [number, number, string][] = [[0, SECTOR, 'header']];
  if (hostsDescriptor) spans.push([descOffset, descOffset + CID_AREA_BYTES, 'descriptor']);
  const directory = (sector: bigint, what: string): number[] => {
    const at = Number(sector) * SECTOR;
    spans.push([at, at + gdBytes, what]);
    if (at + gdBytes > grainOffset) return [];
    const gd = readAt(dev, at, gdBytes);
    return Array.from({ length: tableCount }, (_, i) => gd.readUInt32LE(i * 4));
  };
  const tables = directory(h.gdOffset, 'grain directory');
  const backups = h.flags & FLAG_RGD ? directory(h.rgdOffset, 'redundant grain directory') : [];
  for (const t of [...tables, ...backups]) spans.push([t * SECTOR, t * SECTOR + perTable * 4, 'grain table']);
  if (grainOffset > fileBytes || grainSectors < 1) return refusal('its grains start past the end of its file');
  if (hostsDescriptor && (!Number.isSafeInteger(descOffset) || descOffset < SECTOR)) return refusal('its descriptor is misplaced');
  const sorted = [...spans].sort((a, b) => a[0] - b[0]);
  for (const [i, [start, end, what]] of sorted.entries()) {
    if (end > grainOffset) return refusal(`its ${what} lies outside its metadata area`);
    if (what === 'grain table' && start === 0) return refusal('a grain table is missing');
    if (i > 0 && start < sorted[i - 1][1]) return refusal(`its ${what} overlaps its ${sorted[i - 1][2]}`);
  }
  const entries = new Uint32Array(tableCount * perTable);
  const grainBytes = grainSectors * SECTOR;
  for (let t = 0; t < tableCount; t++) {
    const gt = readAt(dev, tables[t] * SECTOR, perTable * 4);
    for (let i = 0; i < perTable; i++) {
      const sector = gt.readUInt32LE(i * 4);
      if (sector !== 0 && !(zeroGrain && sector === ZEROED) && (sector * SECTOR < grainOffset || sector * SECTOR + grainBytes > Math.ceil(fileBytes / grainBytes) * grainBytes)) {
        return refusal(`a grain entry points outside its grains (sector ${sector})`);
      }
      entries[t * perTable + i] = sector;
    }
  }
  const nextSector = Math.ceil(Math.ceil(fileBytes / SECTOR) / grainSectors) * grainSectors;
  return { layout: { grainBytes, perTable, tables, backups, entries, nextSector, zeroGrain }, descOffset };
}

const SPARSE_TYPES = new Set(['monolithicSparse', 'twoGbMaxExtentSparse']);

/** Where `image` (opened from `dev`) can be written in place as qemu does, the writer; else why not. */
export function vmdkInPlaceWriter(dev: BlockDevice, image: VmdkImage, opts: VmdkInPlaceOptions = {}): SparseInPlace | ReturnType<typeof vmdkFlatInPlaceWriter> & object {
  const flat = vmdkFlatInPlaceWriter(dev, image, opts.cid);
  if (flat && opts.compressed) return { refused: 'instar cannot convert into an existing vmdk image (-n) with -c yet (flat extents); nothing was written' };
  if (flat) return flat;
  const { createType, extents, backingName } = image.state;
  const monolithic = createType === 'monolithicSparse';
  if (!SPARSE_TYPES.has(createType) || extents.length === 0 || extents.some((e) => e.ext.flat || (e.file === '') !== monolithic) || (monolithic && extents.length !== 1)) {
    return { refused: `instar cannot convert into an existing vmdk image (-n) of subformat ${createType} yet; nothing was written` };
  }
  let parent: ((buf: Uint8Array, pos: number) => void) | 'mismatch' | undefined;
  const p = image.parent;
  // qemu's first allocating write fails (EINVAL) when the parent is no vmdk or its CID is not the recorded parentCID.
  if (backingName !== undefined && (!(p instanceof VmdkImage) || p.state.cid !== image.state.parentCid)) parent = 'mismatch';
  else if (backingName !== undefined && p) {
    parent = (buf, pos) => {
      // Past the parent's end the block layer reads zeros.
      const inside = Math.max(0, Math.min(buf.length, p.virtualSize - pos));
      buf.fill(0, inside);
      if (inside > 0) p.read(buf.subarray(0, inside), pos);
    };
  }
  const layouts: { layout: Layout; descOffset: number }[] = [];
  for (const e of extents) {
    if (!e.ext.dev.write) throw new ImageError('the host did not grant the extent files for writing');
    if (!monolithic && (e.ext.dev === dev || layouts.length > 0 && extents.slice(0, layouts.length).some((o) => o.ext.dev === e.ext.dev))) return refusal(`its extent '${e.file}' is named twice or is its descriptor file`);
    const l = sparseLayout(e.ext.dev, monolithic);
    if ('refused' in l) return l;
    layouts.push(l);
  }
  const zeroGrain = layouts[0].layout.zeroGrain;
  // qemu decides zero writes extent by extent; instar writes them only where all extents agree.
  if (layouts.some((l) => l.layout.zeroGrain !== zeroGrain)) return refusal('only some of its extents have zeroed grains');
  if (opts.compressed && (zeroGrain || backingName !== undefined)) return { refused: 'instar cannot convert into an existing vmdk image (-n) with -c yet (zeroed grains or a parent); nothing was written' };
  const descOffset = monolithic ? layouts[0].descOffset : 0;
  if (!cidUpdatable(readAt(dev, descOffset, CID_AREA_BYTES))) return refusal('its descriptor has no parentCID');
  const cid = () => opts.cid ?? randomInt(0, 2 ** 32);
  const writer = new SparseInPlace(dev, descOffset, image.virtualSize, cid, zeroGrain, opts.compressed === true);
  writer.grainBytes = layouts[0].layout.grainBytes;
  extents.forEach((e, i) => writer.extents.push(new ExtentInPlace(e.ext.dev, e.start, e.end - e.start, layouts[i].layout, writer.updateCid, parent)));
  return writer;
}
