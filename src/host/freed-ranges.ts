// Clusters a mutating op freed, which qemu's qcow2 driver discards (a hole punched in the image
// file; measured with both oracles: check -r, resize --shrink, snapshot -d/-a/-c all do). The
// guest cannot punch, so it names the ranges after its writes (io/discard-set.ts) and the host
// punches them once the op succeeded. Crash safety: the guest's writes are durable first (O_DSYNC,
// and a fdatasync here), so the metadata no longer points at a range when it is punched; a crash
// before or during the punching leaves unreferenced clusters holding old bytes, which qemu opens
// and checks clean. The ranges are untrusted: only a writable device's, sorted, disjoint,
// 512-aligned and inside the file as it is now. Punching a range does no more than writing zeros
// there, which the guest could do itself; where punching is unavailable (no koffi, a file system
// without holes, not a regular file) the host writes the zeros: the bytes instar wrote before.
// A range's unit (0, or a power of two from 512 to 2 MiB, qemu's cluster sizes) is the size of
// qemu's separate requests in it: each piece is punched on its own, so that a file system with
// larger blocks frees only the blocks qemu's punches free.
import { fdatasyncSync, fstatSync } from 'node:fs';
import { punchRange } from './punch-holes.ts';
import { DISCARD_ALIGNMENT, MAX_DISCARD_RANGES } from '../io/discard-set.ts';
import { writeZeros } from '../io/fd-device.ts';

/** Most punch calls one op's ranges make (past it a range is punched whole: the same bytes). */
const MAX_PIECES = 1 << 20;

type Range = readonly [number, number, number];

/** The freed ranges of one op run, per device index: checked as they arrive, punched at its end. */
export class FreedRanges {
  private readonly byDevice = new Map<number, Range[]>();
  /** What was wrong with a message: the op then fails and nothing is punched. */
  private problem?: string;

  constructor(private readonly devices: readonly { fd: number; writable: boolean }[]) {}

  /** A guest's `freed` message (its shape checked already). */
  add(device: number, ranges: readonly Range[]): void {
    const why = this.invalid(device, ranges);
    if (why !== undefined) this.problem ??= `the guest named freed ranges that are not valid (${why})`;
    else this.byDevice.set(device, ranges.map(([pos, length, unit]) => [pos, length, unit]));
  }

  /**
   * Punches every device's ranges once its writes are durable; returns why it did not (a bad
   * message, a range past the file's end), and then punches nothing.
   */
  punch(): string | undefined {
    const files = [...this.byDevice].filter(([, ranges]) => ranges.length > 0).map(([device, ranges]) => ({ fd: this.devices[device].fd, ranges, st: fstatSync(this.devices[device].fd) }));
    for (const { ranges, st } of files) {
      const [pos, length] = ranges[ranges.length - 1];
      if (pos + length > st.size) this.problem ??= 'the guest named freed ranges past the end of the file';
    }
    if (this.problem !== undefined) return this.problem;
    let pieces = 0;
    for (const { fd, ranges, st } of files) {
      fdatasyncSync(fd);
      let punching = st.isFile();
      for (const [at, bytes, unit] of ranges) {
        // Pieces of whole file blocks free the same blocks as one punch of them all.
        const whole = unit === 0 || unit % Number(st.blksize) === 0 || (pieces += bytes / unit) > MAX_PIECES;
        for (const [pos, length] of whole ? [[at, bytes]] : unitPieces(at, bytes, unit)) {
          punching &&= punchRange(fd, pos, length);
          if (!punching) writeZeros(fd, pos, length);
        }
      }
    }
    return undefined;
  }

  private invalid(device: number, ranges: readonly Range[]): string | undefined {
    if (!this.devices[device]?.writable) return 'not a writable device';
    if (this.byDevice.has(device)) return 'a device named twice';
    if (ranges.length > MAX_DISCARD_RANGES) return 'too many';
    let end = 0;
    for (const [pos, length, unit] of ranges) {
      if (length <= 0 || pos < end || !Number.isSafeInteger(pos + length)) return 'unsorted, overlapping or empty';
      if (pos % DISCARD_ALIGNMENT || length % DISCARD_ALIGNMENT) return 'unaligned';
      if (unit !== 0 && (unit < 512 || unit > MAX_UNIT || (unit & (unit - 1)) !== 0)) return 'a bad unit';
      end = pos + length;
    }
    return undefined;
  }
}

/** qemu's largest cluster. */
const MAX_UNIT = 2 * 1024 * 1024;

/** [pos, pos + length) cut at the multiples of `unit`. */
function* unitPieces(pos: number, length: number, unit: number): Generator<[number, number]> {
  const end = pos + length;
  for (let at = pos; at < end;) {
    const next = Math.min(end, (Math.floor(at / unit) + 1) * unit);
    yield [at, next - at];
    at = next;
  }
}
