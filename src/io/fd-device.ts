import { fstatSync, ftruncateSync, readSync, writeSync } from 'node:fs';
import type { BlockDevice } from '../formats/types.ts';
import type { DataRunsHint } from '../guest/data-runs.ts';

/** A BlockDevice over an inherited file descriptor, with positioned synchronous I/O. */
export class FdDevice implements BlockDevice {
  /** The file's length; a writable device follows its own writes and truncates (a repair checks the file again after them). */
  size: number;
  readonly allocated: number;
  readonly write?: (buf: Uint8Array, pos: number) => void;
  /** Sets the file's length (writable devices only: convert sizes the target it copies into). */
  readonly truncate?: (size: number) => void;

  /** The host's SEEK_DATA/SEEK_HOLE answer for this file, when it gave one (checked by the caller). */
  readonly dataRuns?: readonly (readonly [number, number])[];
  /** Where dataRuns stop describing the file; absent: all of it. */
  readonly dataRunsEnd?: number;

  constructor(readonly fd: number, writable: boolean, hint?: DataRunsHint) {
    if (hint) {
      this.dataRuns = hint.runs;
      if (hint.end !== undefined) this.dataRunsEnd = hint.end;
    }
    const st = fstatSync(fd);
    this.size = st.size;
    this.allocated = st.blocks * 512;
    if (writable) {
      this.write = (buf, pos) => {
        writeAll(fd, buf, pos);
        this.size = Math.max(this.size, pos + buf.length);
      };
      this.truncate = (size) => {
        ftruncateSync(fd, size);
        this.size = size;
      };
    }
  }

  read(buf: Uint8Array, pos: number): number {
    let done = 0;
    while (done < buf.length) {
      const n = readSync(this.fd, buf, done, buf.length - done, pos + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }
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
