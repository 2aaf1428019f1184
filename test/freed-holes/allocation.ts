// What "the same result as qemu" means for a command that frees clusters: qemu's qcow2 driver
// discards them (a hole punched in the file), so besides the bytes, the file's holes, its
// allocated blocks and therefore `qemu-img info`'s "disk size" must be qemu's.
// One allowance: ext4 counts its extent-tree blocks in st_blocks, and whether a file needs one
// depends on how its blocks happened to lie on the disk (two copies of the same bytes can differ
// by it). Where the holes are the same and the counts differ by one file-system block, the
// "disk size" line of `info` is left out of the comparison; anything else must be equal.
import assert from 'node:assert/strict';
import { closeSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { fileDataRuns } from '../../src/host/data-runs.ts';
import type { RepairRun } from '../check/repair-harness.ts';

/** Blocks the file system allocated for `path` (st_blocks, 512 bytes each). */
export const blocks = (path: string): number => statSync(path).blocks;

/** Where `path` has data, by lseek SEEK_DATA/SEEK_HOLE (koffi must load here). */
function dataRuns(path: string): [number, number][] {
  const st = statSync(path);
  // fileDataRuns leaves out what st_blocks tells: all data, or all hole.
  if (st.blocks === 0) return [];
  if (st.blocks * 512 >= Math.ceil(st.size / 4096) * 4096) return [[0, st.size]];
  const fd = openSync(path, 'r');
  try {
    const runs = fileDataRuns(fd, Number.MAX_SAFE_INTEGER);
    assert.ok(runs, 'lseek SEEK_DATA through koffi');
    return runs;
  } finally {
    closeSync(fd);
  }
}

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

export interface AllocationOptions {
  /** false: qemu's punches freed no block, and instar's must not either (default: qemu's file has holes). */
  holes?: boolean;
  /**
   * false: do not compare SEEK_DATA maps (qemu zeroed ranges with FALLOC_FL_ZERO_RANGE, whose
   * unwritten extents lseek may call holes while instar's written zeros are data).
   */
  dataRuns?: boolean;
}

/**
 * The same bytes, holes, allocated blocks and `info` as qemu's result, whose file must have holes
 * that writing its bytes whole would not (qemu did punch here: the comparison can fail), or, with
 * `holes` false, must have none. Inputs are written whole, so that the holes are the command's.
 */
export function assertSameAllocation(version: OracleVersion, r: Pick<RepairRun, 'qemuPath' | 'instarPath' | 'qemuFile' | 'instarFile'>, label: string, opts: AllocationOptions = {}): void {
  assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
  const qemuBlocks = blocks(r.qemuPath);
  const whole = wholeBlocks(r.qemuFile, r.qemuPath);
  if (opts.holes ?? true) assert.ok(qemuBlocks < whole, `${label}: qemu's file has holes (${qemuBlocks} blocks, ${whole} written whole)`);
  else assert.ok(Math.abs(qemuBlocks - whole) <= 8, `${label}: qemu's file has no holes (${qemuBlocks} blocks, ${whole} written whole)`);
  if (opts.dataRuns ?? true) assert.deepEqual(dataRuns(r.instarPath), dataRuns(r.qemuPath), `${label}: where the file has data`);
  const instarBlocks = blocks(r.instarPath);
  const treeBlock = Number(statSync(r.qemuPath).blksize) / 512;
  if (instarBlocks === qemuBlocks) {
    assert.equal(info(version, r.instarPath), info(version, r.qemuPath), `${label}: qemu-img info`);
    return;
  }
  assert.equal(Math.abs(instarBlocks - qemuBlocks), treeBlock, `${label}: allocated blocks (${instarBlocks}, qemu's ${qemuBlocks}) differ by more than an extent-tree block`);
  const withoutSize = (text: string) => text.replace(/^ *disk size: .*\n/gm, '');
  assert.equal(withoutSize(info(version, r.instarPath)), withoutSize(info(version, r.qemuPath)), `${label}: qemu-img info`);
}
