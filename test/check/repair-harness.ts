// check -r changes the image, so qemu-img and instar each repair their own copy: the same bytes
// under the same name in two directories, the same command line, then stdout, stderr and the
// exit status compared, and both repaired files handed back for comparing.
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { FdDevice } from '../../src/io/fd-device.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { checkQcow2 } from '../../src/formats/qcow2/check.ts';
import { repairQcow2 } from '../../src/formats/qcow2/repair-refcounts.ts';
import { emptyReport, type CheckContext, type Checker, type RepairPlanner } from '../../src/formats/check-types.ts';
import type { Driver } from '../../src/formats/types.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, type OracleVersion, type RunOpts, type RunResult } from '../helpers/oracles.ts';

export interface RepairRun {
  qemu: RunResult;
  instar: RunResult;
  /** The files after each side's run. */
  qemuFile: Buffer;
  instarFile: Buffer;
  qemuPath: string;
  instarPath: string;
}

export class RepairDirs {
  readonly root = mkdtempSync(join(tmpdir(), 'instar-repair-'));
  private n = 0;

  /** Runs `args` (the image named `name` last or where the caller put it) on two copies of `bytes`. */
  run(version: OracleVersion, name: string, bytes: Uint8Array, args: string[], opts: { sandboxed?: boolean; skipQemu?: boolean; instarArgs?: string[]; viaEnv?: boolean; files?: Record<string, Uint8Array> } = {}): RepairRun {
    const base = join(this.root, String(this.n++));
    const qdir = join(base, 'q');
    const idir = join(base, 'i');
    mkdirSync(qdir, { recursive: true });
    mkdirSync(idir, { recursive: true });
    writeFileSync(join(qdir, name), bytes);
    writeFileSync(join(idir, name), bytes);
    // Files the image names (an external data file), copied beside it on both sides.
    for (const [other, content] of Object.entries(opts.files ?? {})) {
      writeFileSync(join(qdir, other), content);
      writeFileSync(join(idir, other), content);
    }
    // skipQemu: for images qemu would spend unbounded time (and disk) on.
    const qemu = opts.skipQemu ? { stdout: '', stderr: '', status: null, signal: null } : runQemu(version, args, { cwd: qdir, timeoutMs: 30_000 });
    qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
    // Options after the operands, or (viaEnv: for command lines that end in their operands, as
    // resize's) the same through instar's environment variables.
    const sandbox = opts.sandboxed ? [] : ['--sandbox=none'];
    const instar = opts.viaEnv
      ? this.instar([...args, ...(opts.instarArgs ?? [])], { cwd: idir, timeoutMs: 30_000, env: { INSTAR_QEMU_VERSION: version, INSTAR_SANDBOX: opts.sandboxed ? '' : 'none' } })
      : this.instar([...args, ...(opts.instarArgs ?? []), '--qemu-version', version, ...sandbox], { cwd: idir, timeoutMs: 30_000 });
    return {
      qemu, instar,
      qemuFile: readFileSync(join(qdir, name)), instarFile: readFileSync(join(idir, name)),
      qemuPath: join(qdir, name), instarPath: join(idir, name),
    };
  }

  /** How instar is run: the built CLI (fast-dirs.ts runs unsandboxed command lines in-process). */
  protected instar(args: string[], opts: RunOpts): RunResult {
    return runInstar(args, opts);
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** stdout, stderr and exit status alike. */
export function assertSameRun(r: Pick<RepairRun, 'qemu' | 'instar'>, label: string): void {
  assert.equal(r.instar.stdout, r.qemu.stdout, `${label}: stdout`);
  assert.equal(r.instar.stderr, r.qemu.stderr, `${label}: stderr`);
  assert.equal(r.instar.status, r.qemu.status, `${label}: exit status (instar stderr: ${r.instar.stderr})`);
}

/**
 * Writes `bytes` to `path`, plans qemu-img check -r all's qcow2 repair on it and applies the first
 * `n` of its writes, as if the process died there; returns how many writes the whole plan has.
 */
export function repairPrefix(path: string, bytes: Uint8Array, n: number): number {
  return planPrefix(path, bytes, n, qcow2Driver, checkQcow2, repairQcow2);
}

/**
 * repairPrefix for any format's checker and planner: the image opened writable as check -r opens
 * it, checked and planned for -r all (the newest qemu's behaviour, or `ctx`'s), the first `n` writes of the
 * plan and then of its close applied; returns how many writes the whole repair has.
 */
export function planPrefix(path: string, bytes: Uint8Array, n: number, driver: Driver, checker: Checker, planner: RepairPlanner, ctx: CheckContext = { qemuMajor: 10 }): number {
  writeFileSync(path, bytes);
  const fd = openSync(path, 'r+');
  try {
    const dev = new FdDevice(fd, true);
    const image = driver.open(dev, { writable: true, check: true });
    const report = emptyReport();
    checker(image, dev, report, ctx);
    const plan = planner(image, dev, report, 'all', ctx);
    assert.ok('steps' in plan, 'a repair plan');
    const first = writeCount(plan.steps);
    applyRepair(dev, plan.steps, { stopAfterWrites: n });
    if (!plan.close) return first;
    if (n <= first) return first + 1;
    const close = plan.close(dev);
    applyRepair(dev, close, { stopAfterWrites: n - first });
    return first + writeCount(close);
  } finally {
    closeSync(fd);
  }
}
