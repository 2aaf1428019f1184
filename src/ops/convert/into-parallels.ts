// convert -n into a parallels image, opened as qemu's read-write open opens it (formats/parallels/
// open-check.ts): qemu 7.2 refuses an image marked in use; qemu 8.2+ first repairs what its check
// finds (check -r all's planner here), printing the check's lines, then writes; both cut a leaked
// tail off (qemu at close; instar first, which leaves the same file). instar repairs
// only when its in-place writer takes the repaired image, so a refusal still writes nothing (qemu
// 10.0 writes a cluster_size=3000 image's data where its repaired data_off does not point).
import { emptyReport } from '../../formats/check-types.ts';
import { applyRepair, type RepairStep } from '../../formats/repair.ts';
import { OverlayDevice } from '../../formats/overlay-device.ts';
import type { BlockDevice, Image } from '../../formats/types.ts';
import { checkParallels } from '../../formats/parallels/check.ts';
import { repairParallels } from '../../formats/parallels/repair.ts';
import { parallelsOpenVerdict, UNCLEAN_OPEN } from '../../formats/parallels/open-check.ts';
import { parallelsInPlaceRefusal, parallelsInPlaceWriter } from '../../formats/parallels/inplace.ts';
import type { OpContext } from '../types.ts';

type Writer = ReturnType<typeof parallelsInPlaceWriter>;

/** The file as `steps` will leave it, read-only: their writes over it, at their last length. */
function afterSteps(dev: BlockDevice, steps: readonly RepairStep[]): BlockDevice {
  let size = dev.size;
  const writes: { pos: number; bytes: Uint8Array }[] = [];
  for (const s of steps) {
    if (s.kind === 'truncate') size = s.size;
    else if (s.kind === 'write') writes.push(s);
  }
  const overlay = new OverlayDevice(dev, writes);
  return { size, read: (buf, pos) => overlay.read(buf, pos) };
}

export function parallelsIntoTarget(ctx: OpContext, image: Image, dev: BlockDevice, qemu: { major: number; minor: number }, discards: boolean): Writer | { openFailed: string } {
  const verdict = parallelsOpenVerdict(dev, qemu.major, qemu.minor);
  if (verdict?.kind === 'unclean') return { openFailed: UNCLEAN_OPEN };
  if (verdict === undefined) return parallelsInPlaceWriter(dev, image.virtualSize, discards);
  if (verdict.kind === 'trim') {
    // qemu allocates from the data's end and its close cuts the file there: cut first, then write.
    const trim: RepairStep[] = [{ kind: 'truncate', size: verdict.size }];
    const refusal = parallelsInPlaceRefusal(afterSteps(dev, trim), image.virtualSize);
    if (refusal) return refusal;
    applyRepair(dev, trim);
    return parallelsInPlaceWriter(dev, image.virtualSize, discards);
  }
  const report = emptyReport();
  checkParallels(image, dev, report, { qemuMajor: qemu.major });
  const plan = repairParallels(image, dev, report, 'all', { qemuMajor: qemu.major });
  if ('refused' in plan) return { refused: plan.refused.replace('cannot repair', 'cannot convert into') };
  const steps = [...plan.steps, ...(plan.close?.(afterSteps(dev, plan.steps)) ?? [])];
  const refusal = parallelsInPlaceRefusal(afterSteps(dev, steps), image.virtualSize);
  if (refusal) return refusal;
  applyRepair(dev, steps);
  for (const line of report.lines) if (typeof line === 'string') ctx.warn?.({ text: line, prefixed: false });
  return parallelsInPlaceWriter(dev, image.virtualSize, discards);
}
