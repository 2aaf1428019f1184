// The guest half of `check`: opens the image (and what it names) as qemu-img check does, then
// runs the format's checker over the image's own file and returns its report for the host to print.
import { ImageError } from '../formats/types.ts';
import { findChecker } from '../formats/checkers.ts';
import { CheckFailure, emptyReport, type CheckReport } from '../formats/check-types.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { OpContext } from './types.ts';

export type CheckOptions = OpenTreeOptions;

export type CheckResult =
  | { format: string; unsupported: true }
  | { format: string; report: CheckReport };

export function checkOp(options: Record<string, unknown>, ctx: OpContext): CheckResult {
  const image = openTree(ctx, 0, { ...(options as CheckOptions), check: true });
  const checker = findChecker(image.format);
  if (!checker) return { format: image.format, unsupported: true };
  const input = ctx.devices[0];
  if (!input) throw new ImageError('no input device');
  const report = emptyReport();
  try {
    // The host sends its version profile; the newest behaviour without one.
    const major = (options.profile as { major?: unknown } | undefined)?.major;
    checker(image, input.dev, report, { qemuMajor: typeof major === 'number' ? major : 10 });
  } catch (e) {
    if (!(e instanceof CheckFailure)) throw e;
    report.failure = e.strerror;
  }
  return { format: image.format, report };
}
