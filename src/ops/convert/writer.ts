// Writes of the copy loop, overlapped with its reads: a few I/O buffers go round, each written
// by node's thread pool (async fs.write on the output's fd) while the loop reads, inflates and
// zero-checks the next one. A write that blocks (dirty-page throttling, the inode lock another
// guest holds) then no longer stalls the reading, as qemu's own parallel requests do not.
// The writes themselves go one at a time, in order, as qemu-img's do: writes into one file take
// its inode lock in turn anyway, and several at once only spin in the kernel waiting for it
// (measured: a fifth of a sandboxed copy's CPU with four in flight per guest).
import { write } from 'node:fs';
import type { BlockDevice } from '../../formats/types.ts';

export class OverlappedWriter {
  private free: Buffer[] = [];
  /** Buffers submitted and not yet written; the first is being written. */
  private readonly queue: { buf: Buffer; parts: [number, number][]; at: number }[] = [];
  private failure: { error: unknown } | undefined;
  private wake: (() => void) | undefined;
  private readonly fd: number | undefined;

  constructor(private readonly out: BlockDevice, slots: number, private readonly size: number) {
    // Devices over a file descriptor write asynchronously; anything else, synchronously.
    const fd = (out as { fd?: unknown }).fd;
    this.fd = typeof fd === 'number' ? fd : undefined;
    for (let i = 0; i < (this.fd === undefined ? 1 : slots); i++) this.free.push(Buffer.allocUnsafe(size));
  }

  /** A buffer to fill; waits while every buffer is being written. */
  async buffer(): Promise<Buffer> {
    while (this.free.length === 0 && !this.failure) await new Promise<void>((resolve) => (this.wake = resolve));
    this.check();
    return this.free.pop()!;
  }

  /** Writes `parts` ([start, end) of `buf`, at output offset `at` + start); `buf` then returns to the pool. */
  submit(buf: Buffer, parts: [number, number][], at: number): void {
    if (this.fd === undefined || parts.length === 0) {
      for (const [s, e] of parts) this.out.write!(buf.subarray(s, e), at + s);
      this.free.push(buf);
      return;
    }
    this.queue.push({ buf, parts, at });
    if (this.queue.length === 1) this.next();
  }

  /** Writes the oldest queued buffer's parts one after another, then the next buffer's. */
  private next(): void {
    const job = this.queue[0];
    const fd = this.fd!;
    let i = 0;
    const finish = () => {
      this.queue.shift();
      this.free.push(job.buf);
      if (this.queue.length > 0) this.next();
      const wake = this.wake;
      this.wake = undefined;
      wake?.();
    };
    const step = (error: unknown) => {
      if (error) this.failure ??= { error };
      // After a failure nothing more is written (the op fails), but every buffer still returns.
      if (this.failure || ++i >= job.parts.length) return finish();
      writeAll(fd, job.buf, job.parts[i][0], job.parts[i][1], job.at + job.parts[i][0], step);
    };
    if (this.failure) return finish();
    writeAll(fd, job.buf, job.parts[0][0], job.parts[0][1], job.at + job.parts[0][0], step);
  }

  /** Waits until every write is done (always, so that none lands after the caller returns); rethrows the first failure. */
  async drain(): Promise<void> {
    while (this.queue.length > 0) await new Promise<void>((resolve) => (this.wake = resolve));
    this.check();
  }

  private check(): void {
    if (this.failure) throw this.failure.error;
  }
}

/** fs.write until [start, end) of `buf` is all written at `pos`. */
function writeAll(fd: number, buf: Buffer, start: number, end: number, pos: number, done: (error: unknown) => void): void {
  write(fd, buf, start, end - start, pos, (error, n) => {
    if (error) return done(error);
    if (n === 0) return done(new Error('write returned 0 bytes'));
    if (start + n < end) return writeAll(fd, buf, start + n, end, pos + n, done);
    done(null);
  });
}
