// One command on two copies of an image: the qemu-img oracle in one directory, instar in another
// (in-process with --sandbox=none, or the built CLI through the sandbox), the same file name in
// both so messages compare byte for byte; both files handed back.
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import type { BlockDevice, ResizeRequest } from '../../src/formats/types.ts';
import type { RepairStep } from '../../src/formats/repair.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qcow2Resize } from '../../src/formats/qcow2/resize.ts';

export interface Pair {
  qemu: RunResult;
  instar: RunResult;
  qemuFiles: Record<string, Buffer>;
  instarFiles: Record<string, Buffer>;
}

export class PairRunner {
  readonly root = mkdtempSync(join(tmpdir(), 'instar-growth-'));
  private n = 0;

  /** Runs `args` where `files` (name → bytes) are; skipQemu for cases only instar answers. */
  async run(version: OracleVersion, files: Record<string, Uint8Array>, args: string[], opts: { sandboxed?: boolean; skipQemu?: boolean } = {}): Promise<Pair> {
    const base = join(this.root, String(this.n++));
    const [qd, id] = [join(base, 'q'), join(base, 'i')];
    for (const d of [qd, id]) {
      mkdirSync(d, { recursive: true });
      for (const [name, bytes] of Object.entries(files)) writeFileSync(join(d, name), bytes);
    }
    const env = { TZ: 'UTC' };
    const qemu = opts.skipQemu ? { stdout: '', stderr: '', status: null, signal: null } : runQemu(version, args, { cwd: qd, env, timeoutMs: 30_000 });
    qemu.stderr = qemu.stderr.replaceAll(oracle(version), 'qemu-img');
    const instar = opts.sandboxed
      ? runInstar([`--qemu-version=${version}`, ...args], { cwd: id, env, timeoutMs: 30_000 })
      : await runInProcess(['--sandbox=none', `--qemu-version=${version}`, ...args], id);
    const read = (d: string) => Object.fromEntries(Object.keys(files).map((name) => [name, readFileSync(join(d, name))]));
    return { qemu, instar, qemuFiles: read(qd), instarFiles: read(id) };
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Writes `source` to `path` and runs `fn` on it as a writable device (crash tests plan and cut with it). */
export function onCopy<T>(source: Uint8Array, path: string, fn: (dev: FdDevice) => T): T {
  writeFileSync(path, source);
  const fd = openSync(path, 'r+');
  try {
    return fn(new FdDevice(fd, true));
  } finally {
    closeSync(fd);
  }
}

/**
 * The writes of a qcow2 resize planned on `dev` (crash tests cut them); the plan must succeed.
 * `readGuest`: the planner reads the image's own guest bytes, as the resize op gives them.
 */
export function plannedResize(dev: BlockDevice, newSize: number, preallocation: ResizeRequest['preallocation'], readGuest = false): RepairStep[] {
  const image = qcow2Driver.open(dev, { writable: true, readsData: true });
  const plan = qcow2Resize.plan(image, dev, { newSize, preallocation, ...(readGuest ? { readGuest: (buf: Uint8Array, at: number) => image.read(buf, at) } : {}) });
  assert.ok('steps' in plan, 'error' in plan ? plan.error : '');
  return plan.steps;
}
