// Commands that change an image run twice: qemu-img on one copy of the files, instar on another
// (same names, two directories), then stdout, stderr, exit status and every file compared.
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, type OracleVersion, type RunOpts, type RunResult } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { rebaseOp } from '../../src/ops/rebase.ts';
import type { OpContext } from '../../src/ops/types.ts';

export interface TwinRun {
  qemu: RunResult;
  instar: RunResult;
  qemuDir: string;
  instarDir: string;
}

export class TwinDirs {
  readonly root = mkdtempSync(join(tmpdir(), 'instar-twin-'));
  private n = 0;

  /** Writes `files` into two fresh directories and runs `args` there with each program. */
  run(version: OracleVersion, files: Record<string, Uint8Array>, args: string[], opts: { sandboxed?: boolean; instarArgs?: string[] } = {}): TwinRun {
    const base = join(this.root, String(this.n++));
    const qemuDir = join(base, 'q');
    const instarDir = join(base, 'i');
    for (const dir of [qemuDir, instarDir]) {
      mkdirSync(dir, { recursive: true });
      for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
    }
    const qemu = runQemu(version, args, { cwd: qemuDir, timeoutMs: 30_000 });
    qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
    const sandbox = opts.sandboxed ? [] : ['--sandbox=none'];
    const instar = this.instar([...args, ...(opts.instarArgs ?? []), '--qemu-version', version, ...sandbox], { cwd: instarDir, timeoutMs: 30_000 });
    return { qemu, instar, qemuDir, instarDir };
  }

  /** How instar is run: the built CLI (fast-dirs.ts runs unsandboxed command lines in-process). */
  protected instar(args: string[], opts: RunOpts): RunResult {
    return runInstar(args, opts);
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Output, status and the named files alike on both sides. */
export function assertSameOutcome(r: TwinRun, files: string[], label: string): void {
  assert.equal(r.instar.stdout, r.qemu.stdout, `${label}: stdout`);
  assert.equal(r.instar.stderr, r.qemu.stderr, `${label}: stderr`);
  assert.equal(r.instar.status, r.qemu.status, `${label}: exit status (instar stderr: ${r.instar.stderr})`);
  for (const f of files) {
    assert.ok(readFileSync(join(r.instarDir, f)).equals(readFileSync(join(r.qemuDir, f))), `${label}: ${f} differs`);
  }
}

/** The top (and its format) and the new backing file a crash simulation rebases. */
export interface RebaseNames {
  top: string;
  format: string;
  newBacking: string;
  /** -c (10.0): the copied clusters compressed. */
  compress?: boolean;
}

/**
 * Writes `files` (the top over old.qcow2, and the new backing file) into `dir` and rebases the top
 * onto the new backing file in-process (safe mode), stopping after `writes` writes: a crash simulation.
 */
export function safeRebaseInDir(dir: string, files: Record<string, Uint8Array>, writes: number, names: RebaseNames = { top: 't.qcow2', format: 'qcow2', newBacking: 'new.qcow2' }): unknown {
  mkdirSync(dir, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  const fds = [names.top, names.newBacking, 'old.qcow2'].map((n, i) => openSync(join(dir, n), i === 0 ? 'r+' : 'r'));
  try {
    const ctx: OpContext = {
      devices: [
        { spec: { fd: fds[0], role: 'input', writable: true }, dev: new FdDevice(fds[0], true) },
        { spec: { fd: fds[1], role: 'input', writable: false }, dev: new FdDevice(fds[1], false) },
        { spec: { fd: fds[2], role: 'backing', writable: false, name: 'old.qcow2', referrer: 0 }, dev: new FdDevice(fds[2], false) },
      ],
      emit: () => undefined,
    };
    return rebaseOp({ format: names.format, fileName: names.top, unsafe: false, backing: names.newBacking, backingFormat: 'qcow2', compress: names.compress, clusterLoop: names.compress, stopAfterWrites: writes }, ctx);
  } finally {
    fds.forEach((fd) => closeSync(fd));
  }
}
