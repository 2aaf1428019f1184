// What "the same result as qemu" means for a command that frees clusters: qemu's qcow2 driver
// discards them (a hole punched in the file), so besides the bytes, the file's allocation and
// therefore `qemu-img info`'s "disk size" must be qemu's.
import assert from 'node:assert/strict';
import { rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { runQemu, type OracleVersion } from '../helpers/oracles.ts';
import type { RepairRun } from '../check/repair-harness.ts';

/** Blocks the file system allocated for `path` (st_blocks, 512 bytes each). */
export const blocks = (path: string): number => statSync(path).blocks;

/** `qemu-img info` of `path` by its name in its own directory (both sides print the same name). */
function info(version: OracleVersion, path: string): string {
  const r = runQemu(version, ['info', basename(path)], { cwd: dirname(path) });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** The blocks `bytes` take when written whole beside `near` (no holes). */
function wholeBlocks(bytes: Uint8Array, near: string): number {
  const path = `${near}.whole`;
  writeFileSync(path, bytes);
  try {
    return blocks(path);
  } finally {
    rmSync(path);
  }
}

/**
 * The same bytes, allocated blocks and `info` as qemu's result, whose file must have holes that
 * writing its bytes whole would not (qemu did punch here: the comparison can fail), or, with
 * `holes` false, must have none (qemu's punches freed no block, instar's must not either). Inputs
 * are written whole, so that the holes are the command's.
 */
export function assertSameAllocation(version: OracleVersion, r: Pick<RepairRun, 'qemuPath' | 'instarPath' | 'qemuFile' | 'instarFile'>, label: string, holes = true): void {
  assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
  const qemuBlocks = blocks(r.qemuPath);
  const whole = wholeBlocks(r.qemuFile, r.qemuPath);
  if (holes) assert.ok(qemuBlocks < whole, `${label}: qemu's file has holes (${qemuBlocks} blocks, ${whole} written whole)`);
  else assert.equal(qemuBlocks, whole, `${label}: qemu's file has no holes`);
  assert.equal(blocks(r.instarPath), qemuBlocks, `${label}: allocated blocks`);
  assert.equal(info(version, r.instarPath), info(version, r.qemuPath), `${label}: qemu-img info`);
}
