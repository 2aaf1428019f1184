// Writes guest data into a QED image that create has just laid out, as qemu's qed driver does
// under qemu-img convert. Each write is one of convert's requests (the writer takes sectors, so
// the caller passes requests through whole), and qemu's order of allocation depends on them: an
// allocating write takes the clusters it covers in one L2 table at the end of the file, written
// whole (what the request leaves of its first and last cluster copied from the backing file, or
// zeros without one), and only then, when that table did not exist, the L2 table itself
// (table_size clusters) after them. Zeros over a backing file (-B) become zero clusters where
// they cover whole clusters and are written as data elsewhere (qemu's block layer falls back for
// the unaligned head and tail). The L1 and L2 tables stay in memory and are written in finish();
// the header is left as create wrote it (qemu sets need-check while writing, clears it at close).
// convert -n starts the writer from an existing image's tables (inplace.ts): zeros over its
// allocated clusters are then written in place, as qemu's zero writes do.
import { unitPieces } from '../bytes.ts';
import { ImageError, NewImageOpenError, type CreatePlan, type Image, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';

const SECTOR = 512;
/** An L2 entry that reads as zeros (QED_CLUSTER_ZERO). */
const ZERO_CLUSTER = 1n;

/** What the writer needs of create's plan (src/formats/qed/create.ts). */
interface QedPlanView {
  size: number;
  clusterSize: number;
  tableSize: number;
  backingFile?: string;
}

/** The image's tables as the writer starts from them: a new image's, or an existing one's. */
export interface QedState {
  l1Offset: number;
  l1: Buffer;
  /** Each L2 table by its L1 index. */
  l2: Map<number, Buffer>;
  /** qemu's s->file_size. */
  fileEnd: number;
}

export class QedWriter implements ImageWriter {
  /** Sectors: every request reaches write() as convert issued it. */
  readonly clusterSize = SECTOR;
  private readonly put: (buf: Uint8Array, pos: number) => void;
  private readonly cs: number;
  /** Bytes of one table (L1 or L2), and the guest bytes one L2 table maps. */
  private readonly tableBytes: number;
  private readonly regionBytes: number;
  private readonly l1Offset: number;
  /** The L1 table as on disk, and each allocated L2 table by its L1 index. */
  private readonly l1: Buffer;
  private readonly l2: Map<number, Buffer>;
  /** qemu's s->file_size: where the next cluster goes. */
  private fileEnd: number;
  private backing?: Pick<Image, 'virtualSize' | 'read'>;

  constructor(files: WriterFiles, private readonly plan: QedPlanView, state?: QedState) {
    this.put = writableOutput(files.image);
    this.cs = plan.clusterSize;
    this.tableBytes = plan.tableSize * plan.clusterSize;
    this.regionBytes = (this.tableBytes / 8) * this.cs;
    this.l1Offset = state?.l1Offset ?? this.cs;
    this.l1 = state?.l1 ?? Buffer.alloc(this.tableBytes);
    this.l2 = state?.l2 ?? new Map();
    this.fileEnd = state?.fileEnd ?? this.cs + this.tableBytes;
  }

  readBacking(backing: Pick<Image, 'virtualSize' | 'read'>): void {
    if (this.plan.backingFile !== undefined) this.backing = backing;
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.plan.size);
    this.request(offset, data.length, data);
  }

  /** bdrv_co_do_pwrite_zeroes over qed: whole clusters become zero clusters, the head and tail are written. */
  writeZeroes(offset: number, length: number): void {
    if (!Number.isSafeInteger(length) || length < 0) throw new ImageError(`instar refuses a zero write of ${length} bytes`);
    checkWriteRange(new Uint8Array(0), offset, this.plan.size - length);
    const end = offset + length;
    const headEnd = Math.min(end, Math.ceil(offset / this.cs) * this.cs);
    const bodyEnd = Math.max(headEnd, Math.floor(end / this.cs) * this.cs);
    if (headEnd > offset) this.request(offset, headEnd - offset, new Uint8Array(headEnd - offset));
    if (bodyEnd > headEnd) this.request(headEnd, bodyEnd - headEnd);
    if (end > bodyEnd) this.request(bodyEnd, end - bodyEnd, new Uint8Array(end - bodyEnd));
  }

  /** One request: data, or (no data) zero clusters; one allocating write per L2 table it reaches, as qed_find_cluster cuts it. */
  private request(offset: number, length: number, data?: Uint8Array): void {
    const bytes = data ?? new Uint8Array(0);
    for (let pos = offset; pos < offset + length; ) {
      const index = Math.floor(pos / this.regionBytes);
      const n = Math.min(offset + length, (index + 1) * this.regionBytes) - pos;
      if (index >= this.tableBytes / 8) throw new ImageError(`instar refuses a write past the QED L1 table (entry ${index})`);
      const newTable = !this.l2.has(index);
      const table = this.l2.get(index) ?? Buffer.alloc(this.tableBytes);
      const within = pos - index * this.regionBytes;
      if (data) this.writeClusters(table, within, bytes.subarray(pos - offset, pos - offset + n), pos);
      else this.zeroClusters(table, within, n);
      if (newTable) {
        this.l2.set(index, table);
        this.l1.writeBigUInt64LE(BigInt(this.fileEnd), index * 8);
        this.fileEnd += this.tableBytes;
      }
      pos += n;
    }
  }

  /** Whole clusters of zeros: unallocated ones become zero clusters, allocated ones get zeros written in place. */
  private zeroClusters(table: Buffer, within: number, length: number): void {
    for (let at = within; at < within + length; at += this.cs) {
      const entry = table.readBigUInt64LE((at / this.cs) * 8);
      if (entry === 0n) table.writeBigUInt64LE(ZERO_CLUSTER, (at / this.cs) * 8);
      else if (entry !== ZERO_CLUSTER) this.put(new Uint8Array(this.cs), Number(entry));
    }
  }

  private writeClusters(table: Buffer, within: number, piece: Uint8Array, guestPos: number): void {
    for (const c of unitPieces(piece, within, this.cs)) {
      const at = c.index * 8;
      const entry = table.readBigUInt64LE(at);
      if (entry !== 0n && entry !== ZERO_CLUSTER) {
        this.put(c.piece, Number(entry) + c.within);
        continue;
      }
      const cluster = this.fileEnd;
      this.fileEnd += this.cs;
      table.writeBigUInt64LE(BigInt(cluster), at);
      if (c.piece.length === this.cs) {
        this.put(c.piece, cluster);
        continue;
      }
      const whole = Buffer.alloc(this.cs);
      const clusterStart = guestPos - within + c.index * this.cs;
      this.fromBacking(whole.subarray(0, c.within), clusterStart);
      this.fromBacking(whole.subarray(c.within + c.piece.length), clusterStart + c.within + c.piece.length);
      whole.set(c.piece, c.within);
      this.put(whole, cluster);
    }
  }

  /** qed_read_backing_file: the backing file's bytes, zeros past its end (or without one). */
  private fromBacking(into: Buffer, guestPos: number): void {
    const b = this.backing;
    if (!b || into.length === 0) return;
    const readable = Math.max(0, Math.min(into.length, b.virtualSize - guestPos));
    if (readable > 0) b.read(into.subarray(0, readable), guestPos);
  }

  /** The tables as the writes so far left them (in memory: finish() writes them). */
  tables(): Readonly<QedState> {
    return { l1Offset: this.l1Offset, l1: this.l1, l2: this.l2, fileEnd: this.fileEnd };
  }

  finish(): void {
    for (const [index, table] of this.l2) this.put(table, Number(this.l1.readBigUInt64LE(index * 8)));
    this.put(this.l1, this.l1Offset);
  }
}

export const qedWriter: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const plan = raw as unknown as QedPlanView;
    // qemu opens what it created and refuses a one-cluster L1 table (qed_check_table_offset: its
    // last cluster is its first), so its convert stops there; the file could not be read anyway.
    // qemu's create takes table_size=1, whose L1 table then overlaps the header: its open refuses it.
    if (plan.tableSize < 2) throw new NewImageOpenError('QED table offset is invalid');
    return new QedWriter(files, plan);
  },
};
