// The guest half of `check`: opens the image (and what it names) as qemu-img check does, then
// runs the format's checker over the image's own file and returns its report for the host to print.
// With -r (check-repair.ts) the image's device is writable and the check is followed, when it
// fixed something, by the second check qemu-img prints after "Double checking the fixed image now...".
import { ImageError } from '../formats/types.ts';
import { findChecker } from '../formats/checkers.ts';
import type { CheckLine, CheckReport, RepairMode } from '../formats/check-types.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import { repairWithCheck, runChecker } from './check-repair.ts';
import type { OpContext } from './types.ts';

export interface CheckOptions extends OpenTreeOptions {
  /** check -r: the image's device is writable and this is what may be fixed. */
  repair?: RepairMode;
}

/** The first check's lines when a repair fixed something (the result's report is the second check's). */
export interface RepairPass {
  lines: CheckLine[];
  omitted: number;
}

export type CheckResult =
  | { format: string; unsupported: true }
  /** instar will not repair this image (qemu would): nothing was written. */
  | { format: string; refused: string }
  | { format: string; report: CheckReport; repair?: RepairPass };

export function checkOp(options: Record<string, unknown>, ctx: OpContext): CheckResult {
  const opts = options as CheckOptions;
  const repair = opts.repair === 'leaks' || opts.repair === 'all' ? opts.repair : undefined;
  const image = openTree(ctx, 0, { ...opts, check: true });
  const checker = findChecker(image.format);
  if (!checker) return { format: image.format, unsupported: true };
  const input = ctx.devices[0];
  if (!input) throw new ImageError('no input device');
  // The host sends its version profile; the newest behaviour without one.
  const major = (options.profile as { major?: unknown } | undefined)?.major;
  const qemuMajor = typeof major === 'number' ? major : 10;
  if (repair) return repairWithCheck(image, input.dev, checker, repair, qemuMajor, !!opts.unsafeQuirks);
  return { format: image.format, report: runChecker(checker, image, input.dev, qemuMajor) };
}
