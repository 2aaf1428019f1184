// Shared by the qcow2 amend tests that rewrite more than the header: images built by qemu-img and
// qemu-io at test time, and the crash sweep (instar's plan cut after every write, each prefix
// checked by qemu-img 10.0, the whole plan compared with qemu's own amend).
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qcow2Amend } from '../../src/formats/qcow2/amend.ts';

/** An image made in `dir` by qemu-img create, then qemu-io commands and `snapshot -c` (`snap:NAME`). */
export function buildImage(dir: string, name: string, opts: string, size: string, actions: string[] = []): Buffer {
  const path = join(dir, name);
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), name, size], { cwd: dir }).status, 0);
  for (const a of actions) {
    const r = a.startsWith('snap:') ? runQemu('10.0', ['snapshot', '-c', a.slice(5), path]) : runQemu('10.0', ['-c', a, path], {}, 'qemu-io');
    assert.equal(r.status, 0, `${name}: ${a}: ${r.stderr}`);
  }
  return readFileSync(path);
}

/** Writes `image` to `path` and applies the first `writes` steps of instar's amend plan; returns how many there are. */
function cutAmend(image: Buffer, path: string, options: Record<string, string>, writes: number): number {
  writeFileSync(path, image);
  const fd = openSync(path, 'r+');
  try {
    const dev = new FdDevice(fd, true);
    const plan = qcow2Amend.plan(dev, qcow2Driver.open(dev, { writable: true, readsData: true }), new Map(Object.entries(options)));
    assert.ok('steps' in plan && plan.error === undefined, JSON.stringify(plan));
    applyRepair(dev, plan.steps, { stopAfterWrites: writes });
    return writeCount(plan.steps);
  } finally {
    closeSync(fd);
  }
}

export interface SweepOptions {
  /** Files the image names (a backing file), written beside it. */
  beside?: Record<string, Buffer>;
  /** Each prefix must read as the image did before (the amend changes no guest data). */
  sameDisk?: boolean;
  /** Fewest writes the plan must have (the sweep must cut something). */
  minWrites?: number;
  /**
   * Past 16 writes, check only every `every`-th prefix and the first and last three (the table
   * growth at the start and the header switch at the end); the whole plan is compared either way.
   */
  every?: number;
}

/**
 * amend -o `options` on `image` cut after every write: each prefix opens and checks with leaks at
 * most (qemu-img check exits 0 or 3), and the whole plan leaves qemu-img 10.0's file.
 */
export function sweepCrashes(dir: string, label: string, image: Buffer, options: Record<string, string>, opts: SweepOptions = {}): void {
  const at = join(dir, `sweep-${label}`);
  mkdirSync(at, { recursive: true });
  for (const [name, bytes] of Object.entries(opts.beside ?? {})) writeFileSync(join(at, name), bytes);
  const original = join(at, 'original.qcow2');
  writeFileSync(original, image);
  const path = join(at, 'cut.qcow2');
  let total = Infinity;
  for (let n = 0; n <= total; n++) {
    if (total > 16 && total !== Infinity && n % (opts.every ?? 1) !== 0 && n > 2 && n < total - 2) continue;
    total = cutAmend(image, path, options, n);
    const what = `${label} after ${n} of ${total} writes`;
    const check = runQemu('10.0', ['check', path]);
    assert.ok(check.status === 0 || check.status === 3, `${what}: check exits ${check.status}: ${check.stdout}${check.stderr}`);
    if (opts.sameDisk) assert.equal(runQemu('10.0', ['compare', '-q', original, path]).status, 0, `${what}: the disk reads as before`);
  }
  assert.ok(total >= (opts.minWrites ?? 3), `${label}: ${total} writes`);
  const qemuCopy = join(at, 'qemu.qcow2');
  writeFileSync(qemuCopy, image);
  const list = Object.entries(options).map(([k, v]) => `${k}=${v}`).join(',');
  assert.equal(runQemu('10.0', ['amend', '-o', list, qemuCopy]).status, 0);
  assert.ok(readFileSync(path).equals(readFileSync(qemuCopy)), `${label}: the whole plan writes qemu's file`);
}
