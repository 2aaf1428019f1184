// Writes of the copy loop, overlapped with its reads: a few I/O buffers go round, each written
// by node's thread pool (async fs.write on the output's fd) while the loop reads, inflates and
// zero-checks the next one. A write that blocks (dirty-page throttling, the inode lock another
// guest holds) then no longer stalls the reading, as qemu's own parallel requests do not.
import { write } from 'node:fs';
import type { BlockDevice } from '../../formats/types.ts';

export class OverlappedWriter {
  private free: Buffer[] = [];
  private inFlight = 0;
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
    let left = parts.length;
    this.inFlight++;
    const settle = (error: unknown) => {
      if (error) this.failure ??= { error };
      if (--left > 0) return;
      this.inFlight--;
      this.free.push(buf);
      const wake = this.wake;
      this.wake = undefined;
      wake?.();
    };
    for (const [s, e] of parts) writeAll(this.fd, buf, s, e, at + s, settle);
  }

  /** Waits until every write is done (always, so that none lands after the caller returns); rethrows the first failure. */
  async drain(): Promise<void> {
    while (this.inFlight > 0) await new Promise<void>((resolve) => (this.wake = resolve));
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
