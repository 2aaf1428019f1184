// Applying a repair (DESIGN.md §2): a format's planner turns the image's state into a list of
// steps; this executor applies them in the planner's order, never past the file's end, with a
// barrier between groups (data before the metadata that points at it). Format-agnostic and pure:
// it only sees a BlockDevice. The host opens a repaired file with O_DSYNC, so every write is on
// disk before the next one starts; `sync` (when the device has one) is the explicit barrier.
// Consecutive writes that continue each other (the next starts where the last ended) go out as
// one pwrite: the same bytes in the same order, one synchronous write instead of several.
import { ImageError, type BlockDevice } from './types.ts';

/** One step of a repair plan. */
export type RepairStep =
  | { kind: 'write'; pos: number; bytes: Uint8Array }
  /** `length` bytes of zeros at `pos` (a VHDX zero descriptor may cover many sectors). */
  | { kind: 'zero'; pos: number; length: number }
  /**
   * Clusters the plan freed (nothing points at them any more), which qemu discards: zeros at
   * `pos` that the host turns into a hole after the op (BlockDevice.discard), or written as zeros
   * on a device that cannot. Only after the barrier that makes the metadata stop naming them.
   * `unit`: qemu discards each unit-aligned piece with a request of its own (check -r frees
   * cluster by cluster); absent: the whole range in one request (io/discard-set.ts).
   */
  | { kind: 'discard'; pos: number; length: number; unit?: number }
  /** Everything before is durable before anything after starts. */
  | { kind: 'barrier' }
  /** Sets the file's length (resize): later steps may write up to it. */
  | { kind: 'truncate'; size: number }
  /**
   * `length` bytes at `pos` that `fill` produces when the step runs (a data copy: the bytes are
   * read from their source then, so a plan of a large copy holds no data).
   */
  | { kind: 'fill'; pos: number; length: number; fill: (buf: Uint8Array) => void };

export interface ApplyOptions {
  /** Tests only: apply this many write/zero steps, then stop as if the process died there. */
  stopAfterWrites?: number;
}

const ZERO_CHUNK = 1024 * 1024;
/** Most bytes joined into one write. */
const JOIN_LIMIT = 4 * 1024 * 1024;

/** Steps that write bytes (what a crash can cut between). */
export const writeCount = (steps: readonly RepairStep[]): number => steps.filter((s) => s.kind !== 'barrier').length;

/**
 * Checks a plan against the file before anything is written: no step may reach past its end, as
 * the plan's own truncate steps leave it (a planner that writes past the end truncates first).
 */
function checkBounds(dev: BlockDevice, steps: readonly RepairStep[]): void {
  let size = dev.size;
  for (const s of steps) {
    if (s.kind === 'barrier') continue;
    if (s.kind === 'truncate') {
      if (!Number.isSafeInteger(s.size) || s.size < 0) throw new ImageError(`instar refuses a resize of the file to ${s.size} bytes`);
      if (!dev.truncate) throw new ImageError('the image was not opened for resizing');
      size = s.size;
      continue;
    }
    const length = s.kind === 'write' ? s.bytes.length : s.length;
    if (!Number.isSafeInteger(s.pos) || s.pos < 0 || !Number.isSafeInteger(length) || length < 0 || s.pos + length > size) {
      throw new ImageError(`instar refuses a repair that writes outside the file (offset ${s.pos}, ${length} bytes)`);
    }
  }
}

/**
 * The device a plan is applied to: `sync` is the barrier where it has one; `discard` frees a
 * range qemu would discard (io/fd-device.ts: reads as zeros, punched by the host after the op).
 */
export type DiscardingDevice = BlockDevice & { sync?: () => void; discard?: (pos: number, length: number, unit?: number) => void };

/** Applies a plan in order; throws before writing anything when a step is out of bounds. */
export function applyRepair(dev: DiscardingDevice, steps: readonly RepairStep[], opts: ApplyOptions = {}): void {
  if (!dev.write) throw new ImageError('the image was not opened for writing');
  checkBounds(dev, steps);
  let budget = opts.stopAfterWrites ?? Infinity;
  for (let at = 0; at < steps.length; at++) {
    const s = steps[at];
    if (s.kind === 'barrier') {
      dev.sync?.();
      continue;
    }
    if (budget <= 0) return;
    if (s.kind === 'write') {
      // A crash test's budget counts steps: a joined write holds no more than it allows.
      const run = joinedRun(steps, at, budget);
      budget -= run.length;
      at += run.length - 1;
      dev.write(run.length === 1 ? s.bytes : Buffer.concat(run.map((w) => w.bytes)), s.pos);
      continue;
    }
    budget--;
    if (s.kind === 'truncate') {
      dev.truncate!(s.size);
      continue;
    }
    if (s.kind === 'discard' && dev.discard) {
      dev.discard(s.pos, s.length, s.unit);
      continue;
    }
    if (s.kind === 'fill') {
      const buf = new Uint8Array(s.length);
      s.fill(buf);
      dev.write(buf, s.pos);
      continue;
    }
    const zeros = new Uint8Array(Math.min(ZERO_CHUNK, s.length));
    for (let done = 0; done < s.length; done += zeros.length) {
      dev.write(zeros.subarray(0, Math.min(zeros.length, s.length - done)), s.pos + done);
    }
  }
  dev.sync?.();
}

type WriteStep = Extract<RepairStep, { kind: 'write' }>;

/** The write at `at` and the writes right after it that continue it, at most `limit` of them. */
function joinedRun(steps: readonly RepairStep[], at: number, limit: number): WriteStep[] {
  const first = steps[at] as WriteStep;
  const run = [first];
  let end = first.pos + first.bytes.length;
  let bytes = first.bytes.length;
  for (let next = at + 1; next < steps.length && run.length < limit; next++) {
    const s = steps[next];
    if (s.kind !== 'write' || s.pos !== end || bytes + s.bytes.length > JOIN_LIMIT) break;
    run.push(s);
    end += s.bytes.length;
    bytes += s.bytes.length;
  }
  return run;
}
