// Overlapped writes for `convert -O <format>`: the copy loop reads a chunk into one of a few
// pooled buffers and the format's writer places it (synchronously, as the ImageWriter contract
// says); the output devices the writer holds defer every write of pooled bytes to node's thread
// pool (async fs.write), so the kernel's page-cache work for the writes runs on the other core
// while the loop reads and zero-checks the next chunk, as qemu's I/O threads do. A pooled buffer
// is handed out again only once all of its writes are done. Writes of any other bytes (tables,
// bitmaps, encrypted copies: the writer's own buffers, which it may reuse) go out at once,
// synchronously: they never cover the clusters pooled bytes go to. The writes themselves run
// one at a time, in order (writes into one file take its inode lock in turn anyway: writer.ts).
import { write } from 'node:fs';
import { ImageError, type BlockDevice } from '../../formats/types.ts';
import { strerror } from '../../strerror.ts';

interface Slot {
  buf: Buffer;
  /** Handed to the copy loop and not yet given back. */
  taken: boolean;
  /** Deferred writes of this buffer not yet done. */
  pending: number;
}

interface Job {
  fd: number;
  slot: Slot;
  bytes: Uint8Array;
  pos: number;
  /** The guest offset of the request the write belongs to (qemu's error message names it). */
  guest: number;
}

export class OverlappedImageWrites {
  private readonly slots: Slot[];
  private readonly bySlotMemory = new Map<ArrayBufferLike, Slot>();
  private readonly queue: Job[] = [];
  private running = false;
  private failure: { error: unknown; guest: number } | undefined;
  private wake: (() => void) | undefined;
  /** The guest offset of the request being placed, for the error message of a failed write. */
  guest = 0;

  constructor(count: number, size: number) {
    this.slots = Array.from({ length: count }, () => ({ buf: Buffer.from(new ArrayBuffer(size)), taken: false, pending: 0 }));
    for (const s of this.slots) this.bySlotMemory.set(s.buf.buffer, s);
  }

  /** The output device `dev` seen by the writer: writes of pooled bytes are deferred. */
  wrap(dev: BlockDevice): BlockDevice {
    const fd = (dev as { fd?: unknown }).fd;
    return typeof fd === 'number' && dev.write ? new DeferringDevice(dev, fd, this) : dev;
  }

  /** A free buffer for the next chunk; waits while every buffer is taken or being written. */
  async take(): Promise<Buffer> {
    for (;;) {
      this.check();
      const slot = this.slots.find((s) => !s.taken && s.pending === 0);
      if (slot) {
        slot.taken = true;
        return slot.buf;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** The copy loop is done with `buf`: it returns to the pool once its writes are done. */
  give(buf: Buffer): void {
    const slot = this.bySlotMemory.get(buf.buffer);
    if (slot) slot.taken = false;
  }

  /** Queues a write when `bytes` lie in a pooled buffer; false: the caller writes them itself. */
  defer(fd: number, bytes: Uint8Array, pos: number): boolean {
    const slot = this.bySlotMemory.get(bytes.buffer);
    if (!slot) return false;
    this.check();
    slot.pending++;
    this.queue.push({ fd, slot, bytes, pos, guest: this.guest });
    if (!this.running) this.next();
    return true;
  }

  /** Deferred writes into `fd` not yet done. */
  outstanding(fd: number): boolean {
    return this.queue.some((j) => j.fd === fd);
  }

  private next(): void {
    const job = this.queue[0];
    if (!job) {
      this.running = false;
      return;
    }
    this.running = true;
    const done = (error: unknown) => {
      if (error) this.failure ??= { error, guest: job.guest };
      this.queue.shift();
      job.slot.pending--;
      // After a failure nothing more is written (the op fails), but every buffer still returns.
      if (this.failure) for (const j of this.queue.splice(0)) j.slot.pending--;
      this.next();
      const wake = this.wake;
      this.wake = undefined;
      wake?.();
    };
    writeAll(job.fd, job.bytes, 0, job.pos, done);
  }

  /** Waits until every deferred write is done (always: none may land after the op returns); rethrows the first failure. */
  async drain(): Promise<void> {
    while (this.running) await new Promise<void>((resolve) => (this.wake = resolve));
    this.check();
  }

  /** A failed write in qemu's words (as ClusterAligner words a synchronous one). */
  private check(): void {
    if (!this.failure) return;
    const { error, guest } = this.failure;
    const code = (error as NodeJS.ErrnoException).code;
    if (error instanceof ImageError || typeof code !== 'string') throw error;
    throw new ImageError(`error while writing at byte ${guest}: ${strerror(code)}`, code);
  }
}

/** An output device whose writes of pooled bytes go through the queue; the rest pass through. */
class DeferringDevice implements BlockDevice {
  private end = 0;

  constructor(private readonly inner: BlockDevice, private readonly fd: number, private readonly writes: OverlappedImageWrites) {}

  get size(): number {
    return Math.max(this.inner.size, this.end);
  }

  read(buf: Uint8Array, pos: number): number {
    // A writer reading its output back would see the file before the queued writes.
    if (this.writes.outstanding(this.fd)) throw new ImageError('instar read an output image while writes to it were still queued');
    return this.inner.read(buf, pos);
  }

  write = (data: Uint8Array, pos: number): void => {
    if (!this.writes.defer(this.fd, data, pos)) return this.inner.write!(data, pos);
    this.end = Math.max(this.end, pos + data.length);
  };

  truncate = (size: number): void => {
    this.inner.truncate!(size);
    this.end = Math.min(this.end, size);
  };
}

/** fs.write until all of `bytes` from `start` is written at `pos` + start. */
function writeAll(fd: number, bytes: Uint8Array, start: number, pos: number, done: (error: unknown) => void): void {
  write(fd, bytes, start, bytes.length - start, pos + start, (error, n) => {
    if (error) return done(error);
    if (n === 0) return done(new Error('write returned 0 bytes'));
    if (start + n < bytes.length) return writeAll(fd, bytes, start + n, pos, done);
    done(null);
  });
}
