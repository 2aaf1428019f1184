// check -r in the guest, as qemu-img runs it: a check in fix mode (the format's planner turns what
// the check found into writes, formats/repair.ts applies them), then, when anything was fixed, a
// second check whose counts are printed, with the first check's fixed counts carried over.
import { findRepair } from '../formats/checkers.ts';
import { CheckFailure, emptyReport, type Checker, type CheckReport, type RepairMode } from '../formats/check-types.ts';
import { applyRepair, type RepairStep } from '../formats/repair.ts';
import type { BlockDevice, Image } from '../formats/types.ts';
import type { CheckResult } from './check.ts';

/** Runs a checker into a fresh report; a CheckFailure becomes the report's `failure`. */
export function runChecker(checker: Checker, image: Image, dev: BlockDevice, qemuMajor: number): CheckReport {
  const report = emptyReport();
  try {
    checker(image, dev, report, { qemuMajor });
  } catch (e) {
    if (!(e instanceof CheckFailure)) throw e;
    report.failure = e.strerror;
  }
  return report;
}

export function repairWithCheck(image: Image, dev: BlockDevice, checker: Checker, mode: RepairMode, qemuMajor: number, unsafeQuirks = false): CheckResult {
  const format = image.format;
  const capability = findRepair(format);
  // qemu's checker answers fix mode with ENOTSUP: "This image format does not support checks".
  if (capability === 'refused') return { format, unsupported: true };
  const first = runChecker(checker, image, dev, qemuMajor);
  if (first.failure !== undefined) return { format, report: first };
  if (capability === undefined) {
    // qemu would repair what this check found; instar cannot, and writes nothing.
    if (first.corruptions || first.leaks) return { format, refused: `instar cannot repair ${format} images yet; nothing was written` };
  }
  let close: ((repaired: BlockDevice) => RepairStep[]) | undefined;
  if (capability !== undefined && capability !== 'at-open') {
    const plan = capability(image, dev, first, mode, { qemuMajor, unsafeQuirks });
    if ('refused' in plan) return { format, refused: plan.refused };
    applyRepair(dev, plan.steps);
    close = plan.close;
  }
  // What qemu writes at close comes after the second check, which does not see it.
  const closed = (result: CheckResult): CheckResult => {
    if (close) applyRepair(dev, close(dev));
    return result;
  };
  if (!first['corruptions-fixed'] && !first['leaks-fixed']) return closed({ format, report: first });
  const second = runChecker(checker, image, dev, qemuMajor);
  second['corruptions-fixed'] = first['corruptions-fixed'];
  second['leaks-fixed'] = first['leaks-fixed'];
  return closed({ format, report: second, repair: { lines: first.lines, omitted: first.omitted } });
}
