// Hands an ImageWriter whole clusters, as its contract asks: a request that starts or ends inside
// a cluster is gathered into a zero-filled cluster buffer (what qemu's copy-on-write fills in over
// no backing file) and sent once the requests have moved past that cluster; whole clusters in the
// middle of a request go out as they are. With a backing file for the target (-B), qemu's
// copy-on-write would fill the rest of such a cluster from that backing file, which the guest does
// not read: a cluster only partly covered by the copy's writes is refused then (`strict`).
import { ImageError, type ImageWriter } from '../../formats/types.ts';
import { strerror } from '../../strerror.ts';

interface Pending {
  cluster: number;
  bytes: Uint8Array;
  /** Bytes of the cluster the requests covered (data or zeros), and whether any was data. */
  covered: number;
  data: boolean;
}

export class ClusterAligner {
  private pending: Pending | undefined;

  constructor(
    private readonly writer: ImageWriter,
    private readonly diskSize: number,
    private readonly compressed: boolean,
    private readonly strict = false,
  ) {}

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
      throw new ImageError(`error while writing at byte ${offset}: ${strerror(code)}`, code);
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
    if (this.strict && p.covered < length) {
      throw new ImageError(`instar cannot convert with a backing file for the target here: the target cluster at byte ${start} would mix ` +
        "the source's bytes with its backing file's (copy-on-write); use a target cluster_size no larger than the source's");
    }
    if (p.data) this.send(p.bytes.subarray(0, length), start);
    else this.sendZeroes(start, length);
  }

  private into(cluster: number, data: Uint8Array | undefined, offset: number, length: number): void {
    if (this.pending && this.pending.cluster !== cluster) this.flushPending();
    this.pending ??= { cluster, bytes: new Uint8Array(this.cs), covered: 0, data: false };
    if (data) {
      this.pending.bytes.set(data, offset - cluster * this.cs);
      this.pending.data = true;
    }
    this.pending.covered += length;
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
