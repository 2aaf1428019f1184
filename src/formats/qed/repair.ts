// check -r for qed (qed_check in fix mode; qemu passes any -r mode as "fix"): invalid L1 and L2
// offsets cleared (their tables written back whole, L2 tables first, the L1 table last), leaks and
// clusters used twice left as they are; then the need-check feature bit cleared in the header,
// after a flush, so that a repair cut short still asks for a check. (Measured: qemu 7.2 and 10.0
// clear the bit even when clusters used twice remain; only a failed read would keep it.)
import { emptyReport, type RepairPlanner } from '../check-types.ts';
import type { RepairStep } from '../repair.ts';
import { walkQed, type QedFixes } from './check.ts';
import { F_NEED_CHECK } from './header.ts';

/** Where the header keeps its feature bits (a little-endian u64). */
const FEATURES_OFFSET = 16;

export const repairQed: RepairPlanner = (_image, dev, report) => {
  const fixes: QedFixes = { writes: [], held: 0 };
  const out = emptyReport();
  const h = walkQed(dev, out, fixes);
  if (fixes.tooLarge) return { refused: 'instar cannot repair this qed image (its fixed tables are too large to hold); nothing was written' };
  const steps: RepairStep[] = fixes.writes.map((w) => ({ kind: 'write', pos: w.pos, bytes: w.bytes }));
  steps.push({ kind: 'barrier' });
  if (!out['check-errors'] && h.features & F_NEED_CHECK) {
    const features = Buffer.alloc(8);
    features.writeBigUInt64LE(h.features & ~F_NEED_CHECK);
    steps.push({ kind: 'write', pos: FEATURES_OFFSET, bytes: features }, { kind: 'barrier' });
  }
  // The fix pass's counts are what qemu-img reports (and its lines: qed prints none).
  Object.assign(report, out);
  return { steps };
};
