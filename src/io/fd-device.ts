import { fstatSync, ftruncateSync, readSync, writeSync } from 'node:fs';
import type { BlockDevice } from '../formats/types.ts';
import type { DataRunsHint } from '../guest/data-runs.ts';
import { DiscardSet } from './discard-set.ts';

/** A BlockDevice over an inherited file descriptor, with positioned synchronous I/O. */
export class FdDevice implements BlockDevice {
  /** The file's length; a writable device follows its own writes and truncates (a repair checks the file again after them). */
  size: number;
  readonly allocated: number;
  readonly write?: (buf: Uint8Array, pos: number) => void;
  /** Sets the file's length (writable devices only: convert sizes the target it copies into). */
  readonly truncate?: (size: number) => void;
  /**
   * Frees [pos, pos + length): it reads as zeros from now on, and the host punches a hole there
   * after the op (discard-set.ts) unless the op writes it again. Only on a writable device made
   * with `deferDiscards` (the guest's and the in-process runner's, which hand the set on).
   */
  readonly discard?: (pos: number, length: number, unit?: number) => void;
  /** What is still to be punched when the op ends, as [offset, length, unit] (discard-set.ts). */
  readonly discarded?: () => [number, number, number][];
  /** Writes zeros where nobody will punch (what discard writes on other devices), emptying the set. */
  readonly settleDiscards?: () => void;

  /** The host's SEEK_DATA/SEEK_HOLE answer for this file, when it gave one (checked by the caller). */
  readonly dataRuns?: readonly (readonly [number, number])[];
  /** Where dataRuns stop describing the file; absent: all of it. */
  readonly dataRunsEnd?: number;
  /** Past dataRunsEnd: spans covering all the data there; holes outside them. */
  readonly dataSpans?: readonly (readonly [number, number])[];
  private readonly freed?: DiscardSet;

  constructor(readonly fd: number, writable: boolean, hint?: DataRunsHint, deferDiscards = false) {
    if (hint) {
      this.dataRuns = hint.runs;
      if (hint.end !== undefined) this.dataRunsEnd = hint.end;
      if (hint.spans !== undefined) this.dataSpans = hint.spans;
    }
    const st = fstatSync(fd);
    this.size = st.size;
    this.allocated = st.blocks * 512;
    if (writable) {
      // Freed ranges are held (to be punched by the host) only where the caller reports them.
      const freed = deferDiscards ? new DiscardSet((pos, length) => writeZeros(fd, pos, length)) : undefined;
      this.freed = freed;
      this.write = (buf, pos) => {
        freed?.remove(pos, buf.length);
        writeAll(fd, buf, pos);
        this.size = Math.max(this.size, pos + buf.length);
      };
      this.truncate = (size) => {
        freed?.clip(size);
        ftruncateSync(fd, size);
        this.size = size;
      };
      if (freed) {
        this.discard = (pos, length, unit) => freed.add(pos, Math.min(length, this.size - pos), unit);
        this.discarded = () => freed.ranges();
        this.settleDiscards = () => freed.settle();
      }
    }
  }

  read(buf: Uint8Array, pos: number): number {
    let done = 0;
    while (done < buf.length) {
      const n = readSync(this.fd, buf, done, buf.length - done, pos + done);
      if (n === 0) break;
      done += n;
    }
    this.freed?.maskRead(buf.subarray(0, done), pos);
    return done;
  }
}

/** The `freed` messages for the host: each device's freed ranges, where it has any. */
export function freedMessages(devices: readonly { dev: FdDevice }[]): { type: 'freed'; device: number; ranges: [number, number, number][] }[] {
  return devices.flatMap(({ dev }, device) => {
    const ranges = dev.discarded?.() ?? [];
    return ranges.length > 0 ? [{ type: 'freed' as const, device, ranges }] : [];
  });
}

/**
 * After a failed op: writes zeros where its devices freed clusters (the host punches only after a
 * success). Errors here are dropped: the op's own failure is the one to report.
 */
export function settleFreed(devices: readonly { dev: FdDevice }[]): void {
  try {
    for (const d of devices) d.dev.settleDiscards?.();
  } catch {
    // The op's own failure is the one to report.
  }
}

/** Writes `length` zeros at `pos`, a MiB at a time. */
export function writeZeros(fd: number, pos: number, length: number): void {
  const zeros = new Uint8Array(Math.min(length, 1024 * 1024));
  for (let done = 0; done < length; done += zeros.length) writeAll(fd, zeros.subarray(0, Math.min(zeros.length, length - done)), pos + done);
}

function writeAll(fd: number, buf: Uint8Array, pos: number): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, pos + done);
}

/** A BlockDevice over memory, for tests and for crafted images. */
export class MemoryDevice implements BlockDevice {
  constructor(protected bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.length;
  }
  read(buf: Uint8Array, pos: number): number {
    if (pos >= this.bytes.length) return 0;
    const part = this.bytes.subarray(pos, Math.min(this.bytes.length, pos + buf.length));
    buf.set(part);
    return part.length;
  }
}
