// qemu-img compare's progress state, computed as qemu's C code computes it (util/qemu-progress.c
// with min_skip 2.0): every step adds (float)chunk / base * 100 in single precision, and a line is
// printed only when the sum passed the last printed value by more than 2, or is exactly 0 or 100.
// The float rounding decides which lines appear, so every step is rounded with Math.fround.

const MIN_SKIP = Math.fround(2.0);

/** The progress of one compare run; each value qemu would print goes to `sink` when it happens. */
export class CompareProgress {
  private current = 0;
  private lastPrint = 0;

  constructor(private readonly sink: (value: number) => void) {}

  /** qemu_progress_print(0, 100) before the walk: prints 0.00. */
  start(): void {
    this.print(0, 100);
  }

  /** One step of `chunk` bytes out of `base` (the larger image's size). */
  advance(chunk: number, base: number): void {
    const f = Math.fround;
    // (float) chunk / progress_base: the uint64 divisor is converted to float too.
    const delta = f(f(f(chunk) / f(base)) * 100);
    this.print(delta, 100);
  }

  private print(delta: number, max: number): void {
    const f = Math.fround;
    const current = f(this.current + f(f(delta / 100) * max));
    this.current = current;
    if (current > f(this.lastPrint + MIN_SKIP) || current === 100 || current === 0) {
      this.lastPrint = current;
      this.sink(current);
    }
  }
}

// Live progress travels as the protocol's progress message {done, total} (non-negative numbers):
// a printed value as the bits of its C float with total FLOAT_BITS, and compare's size warning
// (printed between progress lines) as {0, 0}.
export const FLOAT_BITS = 2 ** 32;

export function floatToBits(value: number): number {
  return new Uint32Array(new Float32Array([value]).buffer)[0];
}

export function bitsToFloat(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}
