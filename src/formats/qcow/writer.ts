// Writes guest data into a qcow (version 1) image that create has just laid out, as qemu's qcow
// driver does under qemu-img convert. Everything is allocated at the end of the file as qemu's
// get_cluster_offset finds it (bdrv_getlength, whole sectors): an L2 table on the first write
// into its range, before the data, at the next cluster boundary; a cluster at the next cluster
// boundary, the file extended over it (qemu truncates: what the request does not cover stays a
// hole; no copy-on-write, so images with a backing file have 512-byte clusters); a compressed
// cluster (-c) at the next sector, its L2 entry carrying the flag and its length. The L1 and L2
// tables stay in memory and are written in finish(); the header is left as create wrote it.
// convert -n starts the writer from an existing image's geometry and tables (inplace.ts).
import { deflateRawSync } from 'node:zlib';
import { unitPieces } from '../bytes.ts';
import { ImageError, type BlockDevice, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';

const SECTOR = 512;
const HEADER_BYTES = 48;
const COMPRESSED = 1n << 63n;

/** What the writer needs of create's plan (src/formats/qcow/create.ts). */
interface QcowPlanView {
  size: number;
  backingFile?: string;
  backed: boolean;
}

const alignUp = (n: number, to: number) => Math.ceil(n / to) * to;

/** An existing image's geometry and tables, for the writer to go on from. */
export interface QcowState {
  clusterBits: number;
  l2Bits: number;
  l1Offset: number;
  l1: Buffer;
  /** Each L2 table by its L1 index. */
  l2: Map<number, Buffer>;
  /** The file's length. */
  fileEnd: number;
}

export class QcowWriter implements ImageWriter {
  /** Sectors: qemu writes each request as it comes, cluster by cluster. */
  readonly clusterSize = SECTOR;
  readonly compressedClusterSize: number;
  /** qcow_co_pwritev_compressed takes only whole clusters (or the disk's last): qemu's empty last write fails. */
  readonly compressedEndFails = true;
  private readonly put: (buf: Uint8Array, pos: number) => void;
  private readonly cs: number;
  private readonly clusterBits: number;
  private readonly l2Entries: number;
  private readonly l1Offset: number;
  private readonly l1: Buffer;
  private readonly l2: Map<number, Buffer>;
  /** The end of the file as qemu's next allocation sees it. */
  private fileEnd: number;

  constructor(private readonly dev: BlockDevice, private readonly plan: QcowPlanView, state?: QcowState) {
    this.put = writableOutput(dev);
    // create's geometry: 512-byte clusters and 32 KiB L2 tables with a backing file, else 4 KiB both.
    const [clusterBits, l2Bits] = state ? [state.clusterBits, state.l2Bits] : plan.backed ? [9, 12] : [12, 9];
    this.clusterBits = clusterBits;
    this.cs = 2 ** clusterBits;
    this.compressedClusterSize = this.cs;
    this.l2Entries = 2 ** l2Bits;
    const nameBytes = plan.backingFile === undefined ? 0 : Buffer.byteLength(plan.backingFile);
    this.l1Offset = state?.l1Offset ?? alignUp(HEADER_BYTES + nameBytes, 8);
    const l1Entries = Math.ceil(plan.size / (this.cs * this.l2Entries));
    this.l1 = state?.l1 ?? Buffer.alloc(alignUp(l1Entries * 8, SECTOR));
    this.l2 = state?.l2 ?? new Map();
    this.fileEnd = state?.fileEnd ?? this.l1Offset + this.l1.length;
  }

  /** The L2 table of the cluster `index` of the disk, allocated (before its data) when new. */
  private table(index: number): Buffer {
    const l1Index = Math.floor(index / this.l2Entries);
    if (l1Index * 8 >= this.l1.length) throw new ImageError(`instar refuses a write past the qcow L1 table (entry ${l1Index})`);
    let table = this.l2.get(l1Index);
    if (!table) {
      const offset = this.allocate(this.cs, this.l2Entries * 8);
      table = Buffer.alloc(this.l2Entries * 8);
      this.l2.set(l1Index, table);
      this.l1.writeBigUInt64BE(BigInt(offset), l1Index * 8);
    }
    return table;
  }

  /** `length` bytes at the end of the file, from the next multiple of `align`. */
  private allocate(align: number, length: number): number {
    const offset = alignUp(alignUp(this.fileEnd, SECTOR), align);
    if (!Number.isSafeInteger(offset + length)) throw new ImageError('instar refuses a qcow image past 2^53 bytes');
    this.fileEnd = offset + length;
    return offset;
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.plan.size);
    for (const { index, within, piece } of unitPieces(data, offset, this.cs)) {
      const table = this.table(index);
      const at = (index % this.l2Entries) * 8;
      let entry = table.readBigUInt64BE(at);
      if (entry & COMPRESSED) throw new ImageError('instar does not write over a compressed qcow cluster');
      if (entry === 0n) {
        entry = BigInt(this.allocate(this.cs, this.cs));
        table.writeBigUInt64BE(entry, at);
      }
      this.put(piece, Number(entry) + within);
    }
  }

  /** qcow_co_pwritev_compressed: one whole cluster (zero-padded at the disk's end), deflated with a 4 KiB window. */
  writeCompressed(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.plan.size);
    if (offset % this.cs !== 0 || data.length > this.cs || (data.length < this.cs && offset + data.length !== this.plan.size)) {
      throw new ImageError(`instar refuses a compressed write of ${data.length} bytes at offset ${offset}: not one cluster`);
    }
    const cluster = Buffer.alloc(this.cs);
    cluster.set(data);
    const packed = deflateRawSync(cluster, { windowBits: 12, memLevel: 9 });
    // qemu's output buffer is one cluster: what does not fit in less is written plainly.
    if (packed.length >= this.cs) return this.write(data, offset);
    const index = offset / this.cs;
    const table = this.table(index);
    const at = (index % this.l2Entries) * 8;
    if (table.readBigUInt64BE(at) !== 0n) throw new ImageError('instar does not compress into an allocated qcow cluster');
    const pos = this.allocate(SECTOR, packed.length);
    table.writeBigUInt64BE(BigInt(pos) | COMPRESSED | (BigInt(packed.length) << BigInt(63 - this.clusterBits)), at);
    this.put(packed, pos);
  }

  finish(): void {
    for (const [l1Index, table] of this.l2) this.put(table, Number(this.l1.readBigUInt64BE(l1Index * 8)));
    this.put(this.l1, this.l1Offset);
    // qemu extends the file over each new cluster: a last one written in part ends the file too.
    if (this.dev.size < this.fileEnd) {
      if (!this.dev.truncate) throw new ImageError('the output was not opened for writing');
      this.dev.truncate(this.fileEnd);
    }
  }
}

export const qcowWriter: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const plan = raw as unknown as QcowPlanView;
    if (!Number.isSafeInteger(plan.size) || plan.size <= 0) throw new ImageError('instar cannot write a qcow image of this size');
    return new QcowWriter(files.image, plan);
  },
};
