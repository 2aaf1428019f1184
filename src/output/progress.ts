// qemu-img's progress line (util/qemu-progress.c's simple printer): "    (NN.NN/100%)\r" on
// stdout, a new line only when the percentage moved more than `minSkip` either way since the
// last one printed (or reached 0 or 100), and "\n" at the end. The percentage is a C float.

/** qemu's print rule on its float state; pure so the guest can pre-filter what it sends. */
export class ProgressRule {
  private current = 0;
  private lastPrint = 0;

  constructor(private readonly minSkip = 1.0) {}

  /** Sets the absolute percentage; returns the float value to print, or undefined. */
  set(percent: number): number | undefined {
    let current = Math.fround(percent);
    if (current > 100) current = 100;
    this.current = current;
    // A value that fell back by more than the skip prints too (amend's operations restart).
    if (current > Math.fround(this.lastPrint + this.minSkip) || current < Math.fround(this.lastPrint - this.minSkip) || current === 100 || current === 0) {
      this.lastPrint = current;
      return current;
    }
    return undefined;
  }

  get value(): number {
    return this.current;
  }
}

/** printf("%3.2f"): exact binary value, ties to even (toFixed rounds exact ties up). */
export function formatPercent(value: number): string {
  const scaled = value * 100; // exact for a float: 24 bits times 100 fits a double
  if (Number.isInteger(scaled - 0.5)) {
    const down = Math.floor(scaled);
    const even = down % 2 === 0 ? down : down + 1;
    return (even / 100).toFixed(2);
  }
  return value.toFixed(2);
}

/** One progress line as qemu prints it. */
export const progressLine = (value: number): string => `    (${formatPercent(value)}/100%)\r`;

/** The host's printer: starts at 0.00, prints what the rule allows, ends with 100.00 and "\n". */
export class ProgressPrinter {
  private rule = new ProgressRule();
  private ended = false;

  constructor(private readonly write: (text: string) => void) {
    this.show(0);
  }

  show(percent: number): void {
    const v = this.rule.set(percent);
    if (v !== undefined) this.write(progressLine(v));
  }

  /** qemu prints 100% after a successful copy. */
  finish(): void {
    this.show(100);
  }

  /** qemu_progress_end: the final newline, success or not. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.write('\n');
  }
}
