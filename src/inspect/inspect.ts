// The inspector's entry points: over a random-access device, over a file descriptor read
// sequentially (a pipe), and the library's `inspect` over a path, a buffer or a Readable.
import { openSync, closeSync, fstatSync, readSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { BlockDevice } from '../formats/types.ts';
import { FdDevice, MemoryDevice } from '../io/fd-device.ts';
import { DEFAULT_CAP, WindowCapture, windowOf } from './window.ts';
import { prefixNeed } from './signatures.ts';
import { analyze, type AnalyzeOptions } from './analyze.ts';
import type { InspectReport } from './types.ts';

export interface InspectOptions extends AnalyzeOptions {
  /** The most leading bytes kept (default 16 MiB); structures beyond fail their check. */
  cap?: number;
}

/** Inspects a random-access device (a regular file, a buffer). */
export function inspectDevice(dev: BlockDevice, opts: InspectOptions = {}): InspectReport {
  return analyze(windowOf(dev, prefixNeed, opts.cap ?? DEFAULT_CAP), opts);
}

const CHUNK = 1024 * 1024;

/** Inspects a file descriptor read front to back (a pipe: no seeking), synchronously. */
export function inspectSequentialFd(fd: number, opts: InspectOptions = {}): InspectReport {
  const capture = new WindowCapture(prefixNeed, opts.cap ?? DEFAULT_CAP);
  const buf = new Uint8Array(CHUNK);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, CHUNK, null);
    } catch (e) {
      // A non-blocking pipe with nothing yet: wait a little and read again.
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      continue;
    }
    if (n === 0) break;
    capture.push(buf.subarray(0, n));
  }
  return analyze(capture.finish(), opts);
}

/** Inspects a stream as it arrives, keeping only the inspection window in memory. */
export async function inspectStream(stream: Readable | AsyncIterable<Uint8Array>, opts: InspectOptions = {}): Promise<InspectReport> {
  const capture = new WindowCapture(prefixNeed, opts.cap ?? DEFAULT_CAP);
  for await (const chunk of stream) {
    capture.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Uint8Array));
  }
  return analyze(capture.finish(), opts);
}

/**
 * The library's inspector, in-process (trusted callers: the bytes are parsed in this process).
 * A string is a path (a regular file, read with positioned reads), a Uint8Array the image itself,
 * anything else a stream read as it arrives. The verdict depends on the bytes alone, never on a name.
 */
export async function inspect(source: string | Uint8Array | Readable | AsyncIterable<Uint8Array>, opts: InspectOptions = {}): Promise<InspectReport> {
  if (source instanceof Uint8Array) return inspectDevice(new MemoryDevice(source), opts);
  if (typeof source === 'string') {
    const fd = openSync(source, 'r');
    try {
      if (!fstatSync(fd).isFile()) return inspectSequentialFd(fd, opts);
      return inspectDevice(new FdDevice(fd, false), opts);
    } finally {
      closeSync(fd);
    }
  }
  return inspectStream(source, opts);
}
