// Hands an ImageWriter whole clusters, as its contract asks: a request that starts or ends inside
// a cluster is gathered into a zero-filled cluster buffer (what qemu's copy-on-write fills in over
// no backing file) and sent once the requests have moved past that cluster; whole clusters in the
// middle of a request go out as they are. With a backing file for the target (-B), qemu's
// copy-on-write fills the rest of such a cluster from that backing file (`backing`, read here);
// a cluster of zeros becomes a zero cluster when qemu's write-zeroes finds the rest of it zero by
// block status (nothing allocated there in the backing chain); otherwise zeros are written. Without the backing image, such a cluster is refused (`strict`).
import { ImageError, type Image, type ImageWriter } from '../../formats/types.ts';
import { outputWriteError } from './writer.ts';

interface Pending {
  cluster: number;
  bytes: Uint8Array;
  /** [start, end) of the cluster the requests covered (data or zeros), in order, and whether any was data. */
  covered: [number, number][];
  data: boolean;
}

export class ClusterAligner {
  private pending: Pending | undefined;

  constructor(
    private readonly writer: ImageWriter,
    private readonly diskSize: number,
    private readonly compressed: boolean,
    private readonly strict = false,
    /** The target's backing file (-B): what copy-on-write reads for the rest of a cluster. */
    private readonly backing?: Pick<Image, 'virtualSize' | 'read' | 'extent'>,
  ) {}

  /** qemu's is_zero: block status says zero over [offset, offset + length) of the backing chain (past its end: zero). */
  private backingZero(offset: number, length: number): boolean {
    const b = this.backing!;
    for (let pos = offset; pos < Math.min(offset + length, b.virtualSize); ) {
      const e = b.extent(pos, Math.min(offset + length, b.virtualSize) - pos);
      if (e.kind === 'data' && !e.zeroData) return false;
      if (!(e.length > 0)) return false;
      pos += e.length;
    }
    return true;
  }

  /** Fills the parts of [0, length) of a cluster at `start` that no request covered from the backing file. */
  private fillFromBacking(p: Pending, start: number, length: number): void {
    let at = 0;
    const gaps: [number, number][] = [];
    for (const [s, e] of p.covered) {
      if (s > at) gaps.push([at, s]);
      at = Math.max(at, e);
    }
    if (at < length) gaps.push([at, length]);
    for (const [s, e] of gaps) {
      const piece = p.bytes.subarray(s, e);
      const readable = Math.max(0, Math.min(e, this.backing!.virtualSize - start) - s);
      if (readable > 0) this.backing!.read(piece.subarray(0, readable), start + s);
      piece.fill(0, readable);
    }
  }

  /** The unit the writer takes: its cluster (or, compressing, its compressed cluster). */
  private get cs(): number {
    return (this.compressed ? this.writer.compressedClusterSize : undefined) ?? this.writer.clusterSize;
  }

  /** qemu's wording for a write the file system refused (ENOSPC, EFBIG). */
  private guarded(offset: number, write: () => void): void {
    try {
      write();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (e instanceof ImageError || typeof code !== 'string') throw e;
      throw outputWriteError(offset, code);
    }
  }

  private send(data: Uint8Array, offset: number): void {
    this.guarded(offset, () => {
      if (!this.compressed) return this.writer.write(data, offset);
      if (!this.writer.writeCompressed) throw new ImageError('Compression not supported for this file format');
      for (let at = 0; at < data.length; at += this.cs) this.writer.writeCompressed(data.subarray(at, Math.min(data.length, at + this.cs)), offset + at);
    });
  }

  private sendZeroes(offset: number, length: number): void {
    this.guarded(offset, () => {
      if (this.writer.writeZeroes) return this.writer.writeZeroes(offset, length);
      const zeros = new Uint8Array(Math.min(length, 1024 * 1024));
      for (let done = 0; done < length; done += zeros.length) this.writer.write(zeros.subarray(0, Math.min(zeros.length, length - done)), offset + done);
    });
  }

  /** The bytes of the pending cluster at the disk's end are cut to the disk. */
  private flushPending(): void {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    const start = p.cluster * this.cs;
    const length = Math.min(this.cs, this.diskSize - start);
    const covered = p.covered.reduce((n, [a, b]) => n + b - a, 0);
    if (!this.strict) {
      if (p.data) this.send(p.bytes.subarray(0, length), start);
      else this.sendZeroes(start, length);
      return;
    }
    if (!this.backing) {
      if (covered < length) {
        throw new ImageError(`instar cannot convert with a backing file for the target here: the target cluster at byte ${start} would mix ` +
          "the source's bytes with its backing file's (copy-on-write)");
      }
      return p.data ? this.send(p.bytes.subarray(0, length), start) : this.sendZeroes(start, length);
    }
    // qemu's first write-zeroes into the cluster makes it a zero cluster when the rest of it is
    // zero by block status; a failed check writes the zeros, copying the rest from the backing file.
    if (!p.data) {
      const [first, last] = p.covered[0];
      if (this.backingZero(start, first) && this.backingZero(start + last, length - last)) return this.sendZeroes(start, length);
    }
    if (covered < length) this.fillFromBacking(p, start, length);
    this.send(p.bytes.subarray(0, length), start);
  }

  private into(cluster: number, data: Uint8Array | undefined, offset: number, length: number): void {
    if (this.pending && this.pending.cluster !== cluster) this.flushPending();
    this.pending ??= { cluster, bytes: new Uint8Array(this.cs), covered: [], data: false };
    if (data) {
      this.pending.bytes.set(data, offset - cluster * this.cs);
      this.pending.data = true;
    }
    const at = offset - cluster * this.cs;
    this.pending.covered.push([at, at + length]);
  }

  /** Splits [offset, offset + length) into a head and tail inside clusters and a body of whole ones. */
  private split(offset: number, length: number, part: (start: number, length: number, whole: boolean) => void): void {
    const cs = this.cs;
    const end = offset + length;
    let pos = offset;
    if (pos % cs !== 0) {
      const headEnd = Math.min(end, Math.ceil(pos / cs) * cs);
      part(pos, headEnd - pos, false);
      pos = headEnd;
    }
    const bodyEnd = end === this.diskSize ? end : Math.floor(end / cs) * cs;
    if (bodyEnd > pos) {
      part(pos, bodyEnd - pos, true);
      pos = bodyEnd;
    }
    if (pos < end) part(pos, end - pos, false);
  }

  write(data: Uint8Array, offset: number): void {
    this.split(offset, data.length, (start, length, whole) => {
      const bytes = data.subarray(start - offset, start - offset + length);
      if (!whole) return this.into(Math.floor(start / this.cs), bytes, start, length);
      this.flushPending();
      this.send(bytes, start);
    });
  }

  /** Makes the range read as zeros over the target's backing file (only with one: -B). */
  zero(offset: number, length: number): void {
    this.split(offset, length, (start, n, whole) => {
      if (!whole) return this.into(Math.floor(start / this.cs), undefined, start, n);
      this.flushPending();
      this.sendZeroes(start, n);
    });
  }

  finish(): void {
    this.flushPending();
  }
}
