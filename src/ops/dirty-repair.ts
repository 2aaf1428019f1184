// A dirty qcow2 image (lazy refcounts cut short) opened for writing: qemu's open repairs its
// refcounts first (qcow2_do_open runs the check in fix-all mode, printing the check's lines, and
// marks the image clean), then the command goes on. instar splits this in two guest runs: a
// mutating op wrapped with `answeringDirty` answers `{ dirtyImage: true }` before it reads or
// writes anything; the host then runs `repair-dirty` (the check -r all planner), prints its
// lines, and runs the op again on the repaired image. qemu 8.2+'s parallels open does the same
// (formats/parallels/open-check.ts says when); qemu 7.2's refuses an image marked in use.
import { ImageError } from '../formats/types.ts';
import { checkQcow2 } from '../formats/qcow2/check.ts';
import { repairQcow2AtOpen } from '../formats/qcow2/repair-refcounts.ts';
import { applyRepair } from '../formats/repair.ts';
import { emptyReport, type CheckLine } from '../formats/check-types.ts';
import { readAt } from '../formats/bytes.ts';
import { checkParallels } from '../formats/parallels/check.ts';
import { repairParallels } from '../formats/parallels/repair.ts';
import { parallelsOpenVerdict, UNCLEAN_OPEN } from '../formats/parallels/open-check.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { Op, OpContext } from './types.ts';

/** What the wrapped op answers instead of running. */
export const DIRTY_IMAGE = { dirtyImage: true } as const;

export type DirtyRepairResult = { lines: CheckLine[] } | { refused: string } | { failed: string; lines: CheckLine[] };

/** Whether device 0 is a qcow2 v3 file with its dirty bit set, opened for writing. */
function dirtyQcow2(ctx: OpContext): boolean {
  const input = ctx.devices[0];
  if (!input?.spec.writable || input.dev.size < 80) return false;
  const head = readAt(input.dev, 0, 80);
  return head.readUInt32BE(0) === 0x514649fb && head.readUInt32BE(4) >= 3 && (head[79] & 1) === 1;
}

/** The qemu version the host sent with its profile, if it sent one. */
function versionOf(options: Record<string, unknown>): { major: number; minor: number } | undefined {
  const p = (options.profile ?? {}) as { major?: unknown; minor?: unknown };
  return typeof p.major === 'number' && typeof p.minor === 'number' ? { major: p.major, minor: p.minor } : undefined;
}

/** What a writable open of device 0 does first, if it is a parallels image (and the version known: bench -w's profile has none). */
function parallelsVerdict(options: Record<string, unknown>, ctx: OpContext) {
  const input = ctx.devices[0];
  const version = versionOf(options);
  if (!input?.spec.writable || !version) return undefined;
  return parallelsOpenVerdict(input.dev, version.major, version.minor);
}

/**
 * Runs `op` unless its image is a dirty qcow2 or a parallels image qemu's open repairs or its close
 * cuts short, which it leaves untouched and reports; a parallels image qemu 7.2 will not open for
 * writing fails here.
 */
export function answeringDirty(op: Op): Op {
  return (options, ctx) => {
    if (dirtyQcow2(ctx)) return DIRTY_IMAGE;
    const verdict = parallelsVerdict(options, ctx);
    if (verdict?.kind === 'unclean') throw new ImageError(UNCLEAN_OPEN);
    return verdict === undefined ? op(options, ctx) : DIRTY_IMAGE;
  };
}

/** The open-time repair: check -r all's planner on device 0, applied; its lines for the host to print. */
export function repairDirtyOp(options: Record<string, unknown>, ctx: OpContext): DirtyRepairResult {
  const verdict = parallelsVerdict(options, ctx);
  // qemu's close cuts a leaked tail off; the command itself changes nothing there.
  if (verdict?.kind === 'trim') {
    applyRepair(ctx.devices[0].dev, [{ kind: 'truncate', size: verdict.size }]);
    return { lines: [] };
  }
  const parallels = verdict?.kind === 'check';
  if (!parallels && !dirtyQcow2(ctx)) throw new ImageError('repair-dirty: not a dirty qcow2 or parallels image opened for writing');
  const image = openTree(ctx, 0, { ...(options as OpenTreeOptions), check: true, noBacking: true });
  const dev = ctx.devices[0].dev;
  const report = emptyReport();
  const qemuMajor = versionOf(options)?.major ?? 10;
  if (parallels) checkParallels(image, dev, report, { qemuMajor });
  else checkQcow2(image, dev, report);
  const plan = parallels ? repairParallels(image, dev, report, 'all', { qemuMajor }) : repairQcow2AtOpen(image, dev, report);
  if ('refused' in plan) return { refused: plan.refused };
  applyRepair(dev, plan.steps);
  // The rest of what qemu's close writes (none for these plans under -r all) comes now.
  if (plan.close) applyRepair(dev, plan.close(dev));
  if (report.failure !== undefined || report['check-errors']) return { failed: report.failure ?? 'Input/output error', lines: report.lines };
  return { lines: report.lines };
}
