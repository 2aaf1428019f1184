// The formats qemu-img can check, and their checkers (qemu's bdrv_co_check per driver). A format
// absent here is one qemu cannot check either: "This image format does not support checks".
import type { Checker, RepairCapability } from './check-types.ts';
import { checkQcow2 } from './qcow2/check.ts';
import { repairQcow2 } from './qcow2/repair-refcounts.ts';
import { checkVdi } from './vdi/check.ts';
import { checkVmdk } from './vmdk/check.ts';
import { checkQed } from './qed/check.ts';
import { repairQed } from './qed/repair.ts';
import { checkVhdx } from './vhdx/check.ts';
import { checkParallels } from './parallels/check.ts';
import { repairParallels } from './parallels/repair.ts';

const checkers: Record<string, Checker> = {
  qcow2: checkQcow2,
  vdi: checkVdi,
  vmdk: checkVmdk,
  qed: checkQed,
  vhdx: checkVhdx,
  parallels: checkParallels,
};

export function findChecker(format: string): Checker | undefined {
  return Object.hasOwn(checkers, format) ? checkers[format] : undefined;
}

/** What check -r does per format (see RepairCapability). */
const repairs: Record<string, RepairCapability> = {
  vdi: 'refused',
  vmdk: 'refused',
  vhdx: 'at-open',
  qcow2: repairQcow2,
  qed: repairQed,
  parallels: repairParallels,
};

export function findRepair(format: string): RepairCapability | undefined {
  return Object.hasOwn(repairs, format) ? repairs[format] : undefined;
}
