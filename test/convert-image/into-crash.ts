// The crash test of convert -n: the guest op run in-process on a copy of the target whose device
// fails every write after the first `budget` (a crash at that point), for each budget until the
// copy completes; each prefix of its writes must leave an image qemu-img opens and checks.
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { convertIntoOp, type ConvertIntoOptions, type ConvertIntoResult } from '../../src/ops/convert/to-image-into.ts';
import type { OpContext } from '../../src/ops/types.ts';

/** A device that fails every write after the first `budget`: a crash at that point. */
export class StoppingDevice extends FdDevice {
  constructor(fd: number, budget: number) {
    super(fd, true);
    const write = this.write!;
    // FdDevice's write is an instance property: wrapped, not overridden.
    Object.defineProperty(this, 'write', {
      value: (buf: Uint8Array, pos: number) => {
        if (budget-- <= 0) throw new Error('stopped');
        write(buf, pos);
      },
    });
  }
}

export interface CrashCase {
  /** The source (raw unless `sourceFormat`) and the target image to copy before each run. */
  source: string;
  sourceFormat?: string;
  target: string;
  format: string;
  /** Scratch directory for the runs' copies; its label names them. */
  dir: string;
  label: string;
  /** More options for the op (parallelsDiscards, vmdkCid), or a function giving them afresh for each run. */
  options?: Partial<ConvertIntoOptions> | (() => Partial<ConvertIntoOptions>);
  /**
   * A journalled format (VHDX): a cut may leave a log to replay, which a read-only open refuses;
   * qemu-img check -r all replays it first, as any writable open of qemu's would.
   */
  replay?: boolean;
}

/** The op on a fresh copy of the target in `dir`, stopped after `budget` writes; the copy's path. */
export function runStopped(c: CrashCase, dir: string, budget: number): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `t.${c.format}`);
  copyFileSync(c.target, file);
  const src = openSync(c.source, 'r');
  const out = openSync(file, 'r+');
  try {
    const ctx: OpContext = {
      devices: [
        { spec: { fd: src, role: 'input', writable: false }, dev: new FdDevice(src, false) },
        { spec: { fd: out, role: 'output', writable: true }, dev: new StoppingDevice(out, budget) },
      ],
      emit: () => undefined,
    };
    const result = convertIntoOp({ sources: [{ index: 0, format: c.sourceFormat ?? 'raw', fileName: c.source }], target: 1, format: c.format, ...(typeof c.options === 'function' ? c.options() : c.options) }, ctx) as ConvertIntoResult;
    assert.ok('counted' in result, JSON.stringify(result));
  } catch (e) {
    if ((e as Error).message !== 'stopped') throw e;
  } finally {
    closeSync(src);
    closeSync(out);
  }
  return file;
}

/** Every prefix of the op's writes leaves an image qemu-img 10.0 opens and checks; the number of writes. */
export function everyPrefixOpens(c: CrashCase, limit = 100): number {
  const final = readFileSync(runStopped(c, join(c.dir, `crash-${c.label}-all`), Infinity));
  let k = 0;
  for (; k < limit; k++) {
    const file = runStopped(c, join(c.dir, `crash-${c.label}-${k}`), k);
    if (readFileSync(file).equals(final)) break;
    if (c.replay) {
      const repair = runQemu('10.0', ['check', '-r', 'all', '-f', c.format, file]);
      assert.equal(repair.status, 0, `after ${k} writes qemu-img check -r all fails: ${repair.stdout}${repair.stderr}`);
    }
    const info = runQemu('10.0', ['info', '-f', c.format, file]);
    assert.equal(info.status, 0, `after ${k} writes qemu-img cannot open the target: ${info.stderr}`);
    const check = runQemu('10.0', ['check', '-f', c.format, file]);
    assert.notEqual(check.status, 1, `after ${k} writes qemu-img cannot check the target: ${check.stdout}${check.stderr}`);
  }
  assert.ok(k < limit, `more than ${limit} writes`);
  return k;
}
