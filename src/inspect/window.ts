// The inspection window: the only bytes of an upload the inspector ever looks at. It is the
// file's first bytes (as many as the detected format's checks need, never more than the cap)
// plus its last TAIL_BYTES (footers: VHD, stream-optimized VMDK, DMG). A stream is captured into
// the window as it arrives, in bounded memory; a file is read into the same window with
// positioned reads. Both build the window by the same rule (see `prefixNeed`), so a file and the
// same bytes as a stream get the same verdict by construction.
import { ImageError, type BlockDevice } from '../formats/types.ts';

/** The most of a file's start the inspector buffers (enough for VHDX metadata regions). */
export const DEFAULT_CAP = 16 * 1024 * 1024;
/** How much of the file's end is kept: footers live in the last few sectors. */
export const TAIL_BYTES = 64 * 1024;
/** What every format needs at least: probes, MBR/GPT headers and entries, the ISO volume descriptor. */
export const BASE_PREFIX = 64 * 1024;

/** A read the window cannot serve: the structure lies beyond what the inspector keeps. */
export class WindowMiss extends ImageError {
  constructor(readonly offset: number, readonly cap: number) {
    super(`needs bytes at offset ${offset}, beyond the inspection window (${cap} bytes)`);
    this.name = 'WindowMiss';
  }
}

/** How many leading bytes the checks want, given the leading bytes buffered so far. */
export type PrefixNeed = (prefix: Uint8Array) => number;

/** The captured bytes of one upload. */
export class Window implements BlockDevice {
  constructor(
    /** bytes [0, prefix.length) */
    readonly prefix: Uint8Array,
    /** bytes [size - tail.length, size) */
    readonly tail: Uint8Array,
    readonly size: number,
    readonly cap: number,
  ) {}

  /** Serves a read from the prefix or the tail; anything else is a WindowMiss, never a guess. */
  read(buf: Uint8Array, pos: number): number {
    const end = Math.min(this.size, pos + buf.length);
    const tailStart = this.size - this.tail.length;
    let at = pos;
    while (at < end) {
      if (at < this.prefix.length) {
        const n = Math.min(end, this.prefix.length) - at;
        buf.set(this.prefix.subarray(at, at + n), at - pos);
        at += n;
      } else if (at >= tailStart) {
        buf.set(this.tail.subarray(at - tailStart, end - tailStart), at - pos);
        at = end;
      } else {
        throw new WindowMiss(at, this.cap);
      }
    }
    return Math.max(0, end - pos);
  }
}

/** The next prefix length: grows monotonically, never past the cap. */
function nextWant(prefix: Uint8Array, want: number, cap: number, need: PrefixNeed): number {
  const wanted = Math.min(cap, Math.max(want, Math.ceil(need(prefix))));
  return Number.isFinite(wanted) ? wanted : want;
}

/**
 * Collects a sequential stream into a Window. Memory: the prefix (≤ cap), the tail ring
 * (TAIL_BYTES) and the chunk being fed; everything else is only counted.
 */
export class WindowCapture {
  private prefix: Uint8Array;
  private filled = 0;
  private want: number;
  private settled = false;
  private readonly ring = new Uint8Array(TAIL_BYTES);
  private total = 0;

  constructor(private readonly need: PrefixNeed, private readonly cap = DEFAULT_CAP) {
    this.want = Math.min(cap, BASE_PREFIX);
    this.prefix = new Uint8Array(this.want);
  }

  /** Bytes seen so far. */
  get size(): number {
    return this.total;
  }

  push(chunk: Uint8Array): void {
    let rest = chunk;
    while (!this.settled && rest.length > 0) {
      const n = Math.min(rest.length, this.want - this.filled);
      this.prefix.set(rest.subarray(0, n), this.filled);
      this.filled += n;
      rest = rest.subarray(n);
      if (this.filled === this.want) this.grow();
    }
    this.keepTail(chunk);
    this.total += chunk.length;
  }

  private grow(): void {
    const want = nextWant(this.prefix.subarray(0, this.filled), this.want, this.cap, this.need);
    if (want === this.want) {
      this.settled = true;
      return;
    }
    const bigger = new Uint8Array(want);
    bigger.set(this.prefix.subarray(0, this.filled));
    this.prefix = bigger;
    this.want = want;
  }

  private keepTail(chunk: Uint8Array): void {
    // The ring holds the stream's last TAIL_BYTES at position total % TAIL_BYTES.
    const part = chunk.length > TAIL_BYTES ? chunk.subarray(chunk.length - TAIL_BYTES) : chunk;
    let at = (this.total + chunk.length - part.length) % TAIL_BYTES;
    let src = 0;
    while (src < part.length) {
      const n = Math.min(part.length - src, TAIL_BYTES - at);
      this.ring.set(part.subarray(src, src + n), at);
      src += n;
      at = (at + n) % TAIL_BYTES;
    }
  }

  /** The window once the stream has ended. */
  finish(): Window {
    const tailLen = Math.min(this.total, TAIL_BYTES);
    const tail = new Uint8Array(tailLen);
    const start = (this.total - tailLen) % TAIL_BYTES;
    const first = Math.min(tailLen, TAIL_BYTES - start);
    tail.set(this.ring.subarray(start, start + first));
    tail.set(this.ring.subarray(0, tailLen - first), first);
    return new Window(this.prefix.subarray(0, this.filled), tail, this.total, this.cap);
  }
}

/** The same window read from a random-access device (a file) with positioned reads. */
export function windowOf(dev: BlockDevice, need: PrefixNeed, cap = DEFAULT_CAP): Window {
  let want = Math.min(cap, BASE_PREFIX);
  let prefix = readUpTo(dev, 0, want);
  while (prefix.length === want) {
    const next = nextWant(prefix, want, cap, need);
    if (next === want) break;
    const more = readUpTo(dev, want, next - want);
    const grown = new Uint8Array(want + more.length);
    grown.set(prefix);
    grown.set(more, want);
    prefix = grown;
    want = next;
  }
  const tailLen = Math.min(dev.size, TAIL_BYTES);
  const tail = readUpTo(dev, dev.size - tailLen, tailLen);
  return new Window(prefix, tail, dev.size, cap);
}

function readUpTo(dev: BlockDevice, pos: number, len: number): Uint8Array {
  const n = Math.max(0, Math.min(len, dev.size - pos));
  const buf = new Uint8Array(n);
  const got = n > 0 ? dev.read(buf, pos) : 0;
  return got === n ? buf : buf.subarray(0, got);
}
