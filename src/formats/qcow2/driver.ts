// The qcow2 driver: opens an image the way qemu's qcow2_do_open does (same checks, same order,
// same messages) and reports what `qemu-img info` shows.
import { knownFileRun } from '../raw/holes.ts';
import { sizeFailureError } from '../sector-count.ts';
import { detectMetadataPreallocation } from './metadata-prealloc.ts';
import { ImageError, type BlockDevice, type Driver, type Extent, type FormatSpecific, type Image, type NodeInfo, type OpenContext, type SnapshotInfo } from '../types.ts';
import { cString, ioContext, readAt } from '../bytes.ts';
import { AUTOCLEAR, COMPAT_LAZY_REFCOUNTS, COMPRESSION_TYPES, CRYPT, INCOMPAT, MAX_L1_BYTES, QCOW2_MAGIC, parseHeader, unknownIncompatible, validateTable, validateTables, type Qcow2Header } from './header.ts';
import { readExtensions, type Extensions } from './extensions.ts';
import { STALE_BITMAPS_TAIL, STALE_BITMAPS_WARNING, STALE_V2_BITMAPS_WARNING } from './header-model.ts';
import { readSnapshots, type SnapshotL1 } from './snapshots.ts';
import { readBitmaps, type BitmapInfo } from './bitmaps.ts';
import { ClusterMap } from './clusters.ts';
import { LUKS_HEADER_SIZE, parseLuksHeader, type LuksInfo } from '../luks/header.ts';
import { keyRequired } from '../luks/driver.ts';
import { openQcow2Crypto, readDecrypted, type Qcow2Crypto } from './encryption.ts';
import { qcow2Measure } from './measure.ts';
import { qcow2Snapshots } from './snapshot-plan.ts';
import { qcow2DirtyBitmaps } from './bitmap-capability.ts';
import { qcow2Resize } from './resize.ts';
import { planChangeBacking } from './rebase-unsafe.ts';
import { qcow2Amend } from './amend.ts';
import { qcow2Create } from './create.ts';
import { qcow2Writer } from './writer.ts';
import { encryptedQcow2Writer } from './writer-encrypt.ts';

const MAX_BACKING_NAME = 1023;

export class Qcow2Image implements Image {
  readonly format = 'qcow2';
  /** qemu's block status answers end with an L2 table (its default L2 slice is the whole table). */
  get blockStatus(): number { return this.h.clusterSize * 2 ** this.h.l2Bits; }
  readonly virtualSize: number;
  private clusters?: ClusterMap;
  private backing?: Image;
  private dataDev?: BlockDevice;
  /** Set when the image is encrypted and the host gave its key (see encryption.ts). */
  crypto?: Qcow2Crypto;

  constructor(
    private dev: BlockDevice,
    private h: Qcow2Header,
    private ext: Extensions,
    private backingFile: string,
    private snapshots: SnapshotInfo[],
    private bitmaps: BitmapInfo[],
    private ctx: OpenContext,
  ) {
    // qemu keeps the size in 512-byte sectors; size_to_l1 limits it far below 2^62, so this is exact.
    this.virtualSize = Number(h.size / 512n) * 512;
  }

  /** qemu loads persistent bitmaps from version 3 images only (measure counts them). */
  get persistentBitmaps(): readonly BitmapInfo[] | undefined { return this.h.version >= 3 ? this.bitmaps : undefined; }
  /** A bitmaps extension without its autoclear bit: qemu's open says the bitmaps are stale (header-model.ts). */
  get warnings(): readonly string[] | undefined { return this.ext.staleBitmaps ? [this.h.version < 3 ? STALE_V2_BITMAPS_WARNING : STALE_BITMAPS_WARNING] : undefined; }
  get warningsTail(): string | undefined { return this.ext.staleBitmaps ? STALE_BITMAPS_TAIL : undefined; }

  /** The opened backing image (the host resolves and opens it; see DESIGN.md §1). */
  attachBacking(backing: Image): void {
    this.backing = backing;
  }

  /** The opened backing image, once attached (convert -C asks whether copy_range reaches it). */
  get backingImage(): Image | undefined {
    return this.backing;
  }

  /** The backing image's virtual size (amend's truncate zeroes a grown area that would show it). */
  get backingSize(): number | undefined {
    return this.backing?.virtualSize;
  }

  /**
   * The disk as an internal snapshot saw it (qemu's bdrv_snapshot_load_tmp): the same image read
   * through the snapshot's L1 table. Matches the id and/or the name, whichever are given.
   */
  loadSnapshot(id: string | undefined, name: string | undefined): Image {
    const l1s: SnapshotL1[] = [];
    const list = readSnapshots(this.dev, this.h, l1s);
    const i = id === undefined && name === undefined ? -1 : list.findIndex((s) => (id === undefined || s.id === id) && (name === undefined || s.name === name));
    if (i < 0) throw new ImageError("Can't find snapshot", 'ENOENT');
    const { l1TableOffset, l1Size } = l1s[i];
    validateTable(this.h, l1TableOffset, l1Size, 8, MAX_L1_BYTES, 'Snapshot L1 table');
    const view = new Qcow2Image(this.dev, { ...this.h, l1TableOffset, l1Size }, this.ext, this.backingFile, this.snapshots, this.bitmaps, this.ctx);
    view.backing = this.backing;
    view.dataDev = this.dataDev;
    view.crypto = this.crypto;
    return view;
  }

  info(): NodeInfo {
    const h = this.h;
    const info: NodeInfo = {
      format: 'qcow2',
      'dirty-flag': (h.incompatible & INCOMPAT.dirty) !== 0n,
      'virtual-size': this.virtualSize,
      'cluster-size': h.clusterSize,
    };
    if (h.cryptMethod !== CRYPT.none) info.encrypted = true;
    if (this.backingFile) {
      info['backing-filename'] = this.backingFile;
      const fmt = this.ext.backingFormat ? cString(this.ext.backingFormat) : '';
      if (fmt) info['backing-filename-format'] = fmt;
    }
    if (this.snapshots.length > 0) info.snapshots = this.snapshots;
    info['format-specific'] = this.formatSpecific();
    // For the host: the file qemu would open for data. qemu-img info itself does not open it.
    if (this.hasDataFile() && this.ext.dataFile) info['data-file'] = cString(this.ext.dataFile);
    return info;
  }

  private hasDataFile(): boolean {
    return (this.h.incompatible & INCOMPAT.dataFile) !== 0n;
  }

  /** QAPI ImageInfoSpecificQCow2, keys in schema order. */
  private formatSpecific(): FormatSpecific {
    const h = this.h;
    const data: Record<string, unknown> = { compat: h.version === 2 ? '0.10' : '1.1' };
    if (h.version === 3) {
      if (this.ext.dataFile) data['data-file'] = cString(this.ext.dataFile);
      if (this.hasDataFile()) data['data-file-raw'] = (h.autoclear & AUTOCLEAR.dataFileRaw) !== 0n;
      data['extended-l2'] = h.extendedL2;
      data['lazy-refcounts'] = (h.compatible & COMPAT_LAZY_REFCOUNTS) !== 0n;
      data.corrupt = (h.incompatible & INCOMPAT.corrupt) !== 0n;
    }
    data['refcount-bits'] = 2 ** h.refcountOrder;
    if (h.cryptMethod === CRYPT.aes) data.encrypt = { format: 'aes' };
    else if (this.ext.luks) data.encrypt = { format: 'luks', ...this.ext.luks };
    if (this.bitmaps.length > 0) data.bitmaps = this.bitmaps;
    data['compression-type'] = COMPRESSION_TYPES[h.compressionType];
    return { type: 'qcow2', data };
  }

  private map(): ClusterMap {
    // Opens for reading fail on these already (readsData); an image opened as info opens it does not.
    const dataFileProblem = dataFileRule(this.h, this.ext);
    if (dataFileProblem) throw new ImageError(dataFileProblem);
    if (this.h.cryptMethod !== CRYPT.none && !this.crypto) throw keyRequired('encrypt.key-secret');
    if (this.backingFile && !this.backing) throw new ImageError('reading qcow2 images with a backing file needs the backing image attached');
    if (this.hasDataFile() && !this.dataDev) {
      const name = cString(this.ext.dataFile!);
      const dev = this.ctx.devices?.get(name);
      if (!dev) throw new ImageError(`the external data file '${name}' was not provided`);
      this.dataDev = dev;
    }
    this.clusters ??= new ClusterMap(this.dev, this.h);
    return this.clusters;
  }

  /** Guest bytes of a hole: the backing image's, zeros past its end or without one. */
  private readHole(part: Uint8Array, pos: number): void {
    // qemu asks the backing file's size before any read of it, past its end too: that fails.
    if (this.backing?.sizeFailure) throw sizeFailureError(this.backing.sizeFailure);
    const backingSize = this.backing?.virtualSize ?? 0;
    const n = Math.max(0, Math.min(part.length, backingSize - pos));
    if (n > 0) this.backing!.read(part.subarray(0, n), pos);
    part.fill(0, n);
  }

  read(buf: Uint8Array, offset: number): void {
    const map = this.map();
    let done = 0;
    // One run of same-kind units at a time, so contiguous data is one positioned read.
    while (done < buf.length) {
      const pos = offset + done;
      if (pos >= this.virtualSize) {
        buf.fill(0, done);
        return;
      }
      const run = map.extent(pos, Math.min(buf.length - done, this.virtualSize - pos), this.virtualSize);
      const piece = buf.subarray(done, done + run.length);
      if (run.compressed) {
        map.readCompressed(map.lookup(pos).compressed!, piece, pos % this.h.clusterSize);
      } else if (run.kind === 'data' && this.crypto) {
        readDecrypted(this.crypto, this.dataDev ?? this.dev, piece, run.hostOffset!, pos);
      } else if (run.kind === 'data') {
        // Past the end of the file reads as zeros, as in qemu; a hostile offset there may be
        // beyond what a file position can be, so it is not read at all.
        const file = this.dataDev ?? this.dev;
        const n = run.hostOffset! < file.size ? file.read(piece, run.hostOffset!) : 0;
        piece.fill(0, n);
      } else if (run.kind === 'unallocated') {
        this.readHole(piece, pos);
      } else {
        piece.fill(0);
      }
      done += run.length;
    }
  }

  private metadataPrealloc?: boolean;
  private metadataPreallocated(): boolean {
    this.metadataPrealloc ??= detectMetadataPreallocation(this.dev, this.h);
    return this.metadataPrealloc;
  }

  extent(offset: number, length: number): Extent {
    const e = this.ownExtent(offset, length);
    if (e.kind !== 'unallocated' || !this.backing) return e;
    // A backing file whose size qemu cannot tell is asked anyway (qemu's "past its end" check
    // needs that size), and its block status fails, wherever the hole is.
    if (this.backing.sizeFailure) throw sizeFailureError(this.backing.sizeFailure);
    if (offset >= this.backing.virtualSize) return e;
    // A hole shows what the backing chain has there, one level deeper.
    const below = this.backing.extent(offset, Math.min(e.length, this.backing.virtualSize - offset));
    return { ...below, depth: below.depth + 1 };
  }

  ownExtent(offset: number, length: number): Extent {
    const e = this.map().extent(offset, length, this.virtualSize);
    if (e.hostOffset !== undefined && this.dataDev) e.file = this.dataDev;
    // Encrypted clusters have no offset a reader could use (qemu's block status omits it).
    if (this.h.cryptMethod !== CRYPT.none) delete e.hostOffset;
    // With metadata preallocation detected, qemu asks the file about data clusters: one in a hole
    // of it is DATA|ZERO, cut where the file's hole ends. Only when the file's holes are known.
    // Past the end of the file is such a hole too (qemu's file layer answers EOF, read as zero).
    else if (e.kind === 'data' && !e.compressed && e.hostOffset !== undefined && this.metadataPreallocated()) {
      const run = knownFileRun(e.file ?? this.dev, e.hostOffset, e.length);
      if (run) {
        e.length = run.length;
        if (run.hole) e.zeroData = true;
      }
    }
    return e;
  }
}

/**
 * What qemu's open says of the image's data-file settings, where it would refuse them. qemu checks
 * them when it opens the data file, which `info` never does (BDRV_O_NO_IO, CVE-2024-4467).
 */
function dataFileRule(h: Qcow2Header, ext: Extensions): string | undefined {
  const hasDataFile = (h.incompatible & INCOMPAT.dataFile) !== 0n;
  if (hasDataFile && !ext.dataFile) return "'data-file' is required for this image";
  if (!hasDataFile && (h.autoclear & AUTOCLEAR.dataFileRaw) !== 0n) return 'data-file-raw requires a data file';
  return undefined;
}

/** Reads the header extensions again, leniently, to name unknown incompatible features. */
function unsupportedFeatures(dev: BlockDevice, h: Qcow2Header, mask: bigint): ImageError {
  let table: Uint8Array | undefined;
  try {
    table = readExtensions(dev, h, true, (o, l) => openLuks(dev, o, l)).featureTable;
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
  }
  const names: string[] = [];
  // Entries are 48 bytes: type, bit number, 46-byte name; an empty name ends the table.
  for (let at = 0; table && at + 48 <= table.length && table[at + 2] !== 0; at += 48) {
    const bit = 1n << BigInt(table[at + 1] & 63); // qemu shifts a 64-bit 1 by the raw byte
    if (table[at] === 0 && mask & bit) {
      names.push(cString(table.subarray(at + 2, at + 48)));
      mask &= ~bit;
    }
  }
  if (mask) names.push(`Unknown incompatible feature: ${mask.toString(16)}`);
  return new ImageError(`Unsupported qcow2 feature(s): ${names.join(', ')}`);
}

/** The LUKS header inside the crypto header extension's area, for info (no key needed). */
function openLuks(dev: BlockDevice, offset: bigint, length: bigint): LuksInfo {
  if (BigInt(LUKS_HEADER_SIZE) > length) throw new ImageError('Request for data outside of extension header');
  return parseLuksHeader(ioContext('Could not read encryption header', () => readAt(dev, offset, LUKS_HEADER_SIZE)));
}

export function openQcow2(dev: BlockDevice, ctx: OpenContext): Qcow2Image {
  const h = parseHeader(dev);
  const unknown = unknownIncompatible(h);
  if (unknown) throw unsupportedFeatures(dev, h, unknown);
  // qemu-img check opens without the snapshot table (BDRV_O_CHECK): its checker reads it.
  const tables = ctx.check ? { ...h, nbSnapshots: 0, snapshotsOffset: 0n } : h;
  // A corrupt image opens read-write for a check (BDRV_O_CHECK): check -r may clear the bit.
  validateTables(tables, ctx.writable && !ctx.check);
  const ext = readExtensions(dev, h, false, (o, l) => openLuks(dev, o, l));
  if (ctx.readsData) {
    const dataFileProblem = dataFileRule(h, ext);
    if (dataFileProblem) throw new ImageError(dataFileProblem);
  }

  // qemu 10.0 refuses this even for info; 7.2 opens it and then crashes (segfault) in info.
  if (h.cryptMethod === CRYPT.luks && !ext.luks) throw new ImageError(`Missing CRYPTO header for crypt method ${CRYPT.luks}`);

  let backingFile = '';
  if (h.backingFileOffset !== 0n) {
    const len = h.backingFileSize;
    if (len > Math.min(MAX_BACKING_NAME, h.clusterSize - Number(h.backingFileOffset))) {
      throw new ImageError('Backing file name too long');
    }
    backingFile = cString(readAt(dev, h.backingFileOffset, len));
  }
  const snapshots = readSnapshots(dev, tables);
  const virtualSize = (h.size / 512n) * 512n;
  const bitmaps = ext.bitmaps ? readBitmaps(dev, ext.bitmaps, h.clusterSize, virtualSize) : [];
  // Sizes that pass the L1 check yet are this large only come from size_to_l1's wrap-around;
  // the generic block layer then refuses the length.
  if (h.size >= 1n << 62n) throw new ImageError('Could not refresh total sector count: File too large');
  const image = new Qcow2Image(dev, h, ext, backingFile, snapshots, bitmaps, ctx);
  image.crypto = openQcow2Crypto(dev, h, ext, ctx);
  return image;
}

export const qcow2Driver: Driver = {
  name: 'qcow2',
  // qemu: at least a whole header's worth of bytes, the magic, and version ≥ 2.
  probe: (head) => {
    if (head.length < 104) return 0;
    const b = Buffer.from(head.buffer, head.byteOffset, head.length);
    return b.readUInt32BE(0) === QCOW2_MAGIC && b.readUInt32BE(4) >= 2 ? 100 : 0;
  },
  open: openQcow2,
  measure: qcow2Measure,
  resize: qcow2Resize,
  changeBacking: planChangeBacking,
  amend: qcow2Amend,
  create: qcow2Create,
  // An encrypted plan (encrypt.format=luks or aes) has its data clusters encrypted (writer-encrypt.ts).
  writer: { open: (files, plan) => (plan.luks || plan.aes ? encryptedQcow2Writer.open(files, plan) : qcow2Writer.open(files, plan)) },
  snapshots: qcow2Snapshots,
  dirtyBitmaps: qcow2DirtyBitmaps,
};
