// Writes guest data into a QED image that create has just laid out, as qemu's qed driver does
// under qemu-img convert. Each write is one of convert's requests (the writer takes sectors, so
// the caller passes requests through whole), and qemu's order of allocation depends on them: an
// allocating write takes the clusters it covers in one L2 table at the end of the file, written
// whole (zeros around the request: copy-on-write from no backing file), and only then, when that
// table did not exist, the L2 table itself (table_size clusters) after them. The L1 and L2 tables
// stay in memory and are written in finish(); the header is left as create wrote it (qemu sets
// its need-check bit while writing and clears it at close).
import { unitPieces } from '../bytes.ts';
import { ImageError, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';

const SECTOR = 512;

/** What the writer needs of create's plan (src/formats/qed/create.ts). */
interface QedPlanView {
  size: number;
  clusterSize: number;
  tableSize: number;
  backingFile?: string;
}

class QedWriter implements ImageWriter {
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
  private readonly l2 = new Map<number, Buffer>();
  /** qemu's s->file_size: where the next cluster goes. */
  private fileEnd: number;

  constructor(files: WriterFiles, private readonly plan: QedPlanView) {
    this.put = writableOutput(files.image);
    this.cs = plan.clusterSize;
    this.tableBytes = plan.tableSize * plan.clusterSize;
    this.regionBytes = (this.tableBytes / 8) * this.cs;
    this.l1Offset = this.cs;
    this.l1 = Buffer.alloc(this.tableBytes);
    this.fileEnd = this.cs + this.tableBytes;
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.plan.size);
    // One allocating write per L2 table the request reaches, as qed_find_cluster cuts it.
    for (const region of unitPieces(data, offset, this.regionBytes)) {
      if (region.index >= this.tableBytes / 8) throw new ImageError(`instar refuses a write past the QED L1 table (entry ${region.index})`);
      const newTable = !this.l2.has(region.index);
      const table = this.l2.get(region.index) ?? Buffer.alloc(this.tableBytes);
      for (const c of unitPieces(region.piece, region.within, this.cs)) {
        const at = c.index * 8;
        let cluster = Number(table.readBigUInt64LE(at));
        if (cluster === 0) {
          cluster = this.fileEnd;
          this.fileEnd += this.cs;
          table.writeBigUInt64LE(BigInt(cluster), at);
          if (c.piece.length < this.cs) {
            const whole = Buffer.alloc(this.cs);
            whole.set(c.piece, c.within);
            this.put(whole, cluster);
            continue;
          }
        }
        this.put(c.piece, cluster + c.within);
      }
      if (newTable) {
        this.l2.set(region.index, table);
        this.l1.writeBigUInt64LE(BigInt(this.fileEnd), region.index * 8);
        this.fileEnd += this.tableBytes;
      }
    }
  }

  finish(): void {
    for (const [index, table] of this.l2) this.put(table, Number(this.l1.readBigUInt64LE(index * 8)));
    this.put(this.l1, this.l1Offset);
  }
}

export const qedWriter: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const plan = raw as unknown as QedPlanView;
    if (plan.backingFile !== undefined) {
      throw new ImageError('instar cannot convert -O qed with a backing file for the target yet (qemu copies clusters from it); nothing was written');
    }
    // qemu opens what it created and refuses a one-cluster L1 table (qed_check_table_offset: its
    // last cluster is its first), so its convert stops there; the file could not be read anyway.
    if (plan.tableSize < 2) throw new ImageError('QED table offset is invalid');
    return new QedWriter(files, plan);
  },
};
