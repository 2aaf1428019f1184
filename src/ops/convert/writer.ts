// Writes of the copy loop, overlapped with its reads: a few I/O buffers go round, each written
// by node's thread pool (async fs.write on the output's fd) while the loop reads, inflates and
// zero-checks the next one. A write that blocks (dirty-page throttling, the inode lock another
// guest holds) then no longer stalls the reading, as qemu's own parallel requests do not.
// The writes themselves go one at a time, in order, as qemu-img's do: writes into one file take
// its inode lock in turn anyway, and several at once only spin in the kernel waiting for it
// (measured: a fifth of a sandboxed copy's CPU with four in flight per guest).
// Each write takes every queued part that continues where the previous one ends, across buffers
// (one pwritev): the next write can only start when the loop's thread gets back to its event
// loop, between its synchronous reads, so a write per buffer leaves the file idle meanwhile.
import { writev } from 'node:fs';
import { ImageError, type BlockDevice } from '../../formats/types.ts';
import { strerror } from '../../strerror.ts';

/** Most parts in one write (IOV_MAX is 1024). */
const MAX_PIECES = 64;

export class OverlappedWriter {
  private free: Buffer[] = [];
  /** Buffers submitted and not yet written; the first is being written. */
  private readonly queue: { buf: Buffer; parts: [number, number][]; at: number; chunk: number }[] = [];
  private failure: { error: unknown; chunk: number } | undefined;
  private wake: (() => void) | undefined;
  private readonly fd: number | undefined;
  /** Where the writes stand in the oldest queued buffer: its part, and bytes of that part written. */
  private part = 0;
  private partDone = 0;

  constructor(private readonly out: BlockDevice, slots: number, private readonly size: number) {
    // Devices over a file descriptor write asynchronously; anything else, synchronously.
    const fd = (out as { fd?: unknown }).fd;
    this.fd = typeof fd === 'number' ? fd : undefined;
    for (let i = 0; i < (this.fd === undefined ? 1 : slots); i++) this.free.push(Buffer.allocUnsafe(size));
  }

  /** A buffer to fill; waits while every buffer is being written. */
  async buffer(): Promise<Buffer> {
    // A write that finished meanwhile chains the next one only from the event loop; with a free
    // buffer at hand the loop would not get there until every buffer is full again.
    if (this.queue.length > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.free.length === 0 && !this.failure) await new Promise<void>((resolve) => (this.wake = resolve));
    this.check();
    return this.free.pop()!;
  }

  /**
   * Writes `parts` ([start, end) of `buf`, at output offset `at` + start); `buf` then returns to the
   * pool. `chunk`: the output offset a failure of these writes is reported at (qemu's request).
   */
  submit(buf: Buffer, parts: [number, number][], at: number, chunk = at): void {
    if (this.fd === undefined || parts.length === 0) {
      try {
        for (const [s, e] of parts) this.out.write!(buf.subarray(s, e), at + s);
      } catch (error) {
        if (!(error as NodeJS.ErrnoException).code) throw error;
        throw new WriteFailure(error, chunk);
      } finally {
        this.free.push(buf);
      }
      return;
    }
    this.queue.push({ buf, parts, at, chunk });
    if (this.queue.length === 1) this.next();
  }

  /** Writes the queued parts in order, each write as many contiguous ones as are queued. */
  private next(): void {
    if (this.failure) return this.settle();
    const pieces: Buffer[] = [];
    let pos = -1;
    let end = -1;
    gather: for (let j = 0, p = this.part; j < this.queue.length; j++, p = 0) {
      const job = this.queue[j];
      for (; p < job.parts.length; p++) {
        const skip = j === 0 && p === this.part ? this.partDone : 0;
        const from = job.at + job.parts[p][0] + skip;
        if (pieces.length > 0 && (from !== end || pieces.length >= MAX_PIECES)) break gather;
        if (pieces.length === 0) pos = from;
        pieces.push(job.buf.subarray(job.parts[p][0] + skip, job.parts[p][1]));
        end = job.at + job.parts[p][1];
      }
    }
    writev(this.fd!, pieces, pos, (error, n) => {
      if (!error && n === 0) error = new Error('write returned 0 bytes');
      if (error) {
        this.failure ??= { error, chunk: this.queue[0].chunk };
        return this.settle();
      }
      this.advance(n);
      if (this.queue.length > 0) this.next();
      this.wakeUp();
    });
  }

  /** Moves past `n` written bytes, returning every buffer written in full to the pool. */
  private advance(n: number): void {
    while (n > 0) {
      const job = this.queue[0];
      const [start, end] = job.parts[this.part];
      const step = Math.min(n, end - start - this.partDone);
      n -= step;
      this.partDone += step;
      if (this.partDone < end - start) continue;
      this.partDone = 0;
      if (++this.part < job.parts.length) continue;
      this.part = 0;
      this.queue.shift();
      this.free.push(job.buf);
    }
  }

  /** After a failure nothing more is written (the op fails), but every buffer still returns. */
  private settle(): void {
    for (const job of this.queue.splice(0)) this.free.push(job.buf);
    this.part = 0;
    this.partDone = 0;
    this.wakeUp();
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Waits until every write is done (always, so that none lands after the caller returns); rethrows the first failure. */
  async drain(): Promise<void> {
    while (this.queue.length > 0) await new Promise<void>((resolve) => (this.wake = resolve));
    this.check();
  }

  private check(): void {
    if (this.failure) throw new WriteFailure(this.failure.error, this.failure.chunk);
  }
}

/** A write of the output failed (ENOSPC, EIO...): its errno, and the request qemu would name. */
export class WriteFailure extends Error {
  readonly code: string | undefined;
  constructor(error: unknown, readonly chunk: number) {
    super(error instanceof Error ? error.message : String(error));
    this.code = (error as NodeJS.ErrnoException).code;
  }
}

/** A write of the output that the file system refused, in qemu-img convert's words (dd words it its own way). */
export class OutputWriteError extends ImageError {}

/** qemu-img convert's words for a refused write of the request starting at `offset`. */
export const outputWriteError = (offset: number, code: string): OutputWriteError =>
  new OutputWriteError(`error while writing at byte ${offset}: ${strerror(code)}`, code);
