// Images for the commit tests, built once per file by qemu-img and qemu-io (7.2) and kept as
// bytes, so that every case starts from the same files; and the comparisons the cases share.
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { commitOp, type CommitOptions, type CommitResult } from '../../src/ops/commit.ts';
import type { OpContext } from '../../src/ops/types.ts';

/** One image of a chain: its name, qemu-img create options (backing names relative), qemu-io writes. */
export type Level = { name: string; create: string[]; writes?: string[]; format?: string; size?: string };

export class ImageBuilder {
  readonly root = mkdtempSync(join(tmpdir(), 'instar-commit-'));
  private n = 0;

  /** Builds the levels (bottom first) in a directory of their own; returns every file's bytes. */
  chain(levels: Level[]): Record<string, Uint8Array> {
    const dir = join(this.root, `chain${this.n++}`);
    mkdirSync(dir);
    for (const l of levels) {
      const c = runQemu('7.2', ['create', '-q', ...l.create, l.name, l.size ?? '4M'], { cwd: dir });
      assert.equal(c.status, 0, `create ${l.name}: ${c.stderr}`);
      if (!l.writes?.length) continue;
      const io = runQemu('7.2', ['-f', l.format ?? 'qcow2', ...l.writes.flatMap((w) => ['-c', w]), l.name], { cwd: dir }, 'qemu-io');
      assert.equal(io.status, 0, `qemu-io ${l.name}: ${io.stderr}`);
    }
    return Object.fromEntries(levels.map((l) => [l.name, readFileSync(join(dir, l.name))]));
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/**
 * Writes `files` (the top t.qcow2 over the base b.qcow2) into `dir` and commits them there
 * in-process, both granted writable as the host grants them (crash tests pass stopAfterWrites).
 */
export function commitInDir(dir: string, files: Record<string, Uint8Array>, options: Partial<CommitOptions>): CommitResult {
  mkdirSync(dir, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  const top = openSync(join(dir, 't.qcow2'), 'r+');
  const base = openSync(join(dir, 'b.qcow2'), 'r+');
  try {
    const ctx: OpContext = {
      devices: [
        { spec: { fd: top, role: 'input', writable: true }, dev: new FdDevice(top, true) },
        { spec: { fd: base, role: 'backing', writable: true, name: 'b.qcow2', referrer: 0 }, dev: new FdDevice(base, true) },
      ],
      emit: () => undefined,
    };
    return commitOp({ format: 'qcow2', fileName: 't.qcow2', ...options }, ctx) as CommitResult;
  } finally {
    closeSync(top);
    closeSync(base);
  }
}

/**
 * qemu's -p output depends on how often its job loop polled and which copy operations had ended
 * by then: repeated progress lines collapse and values between 0 and 100 are dropped (the steps
 * are compared in progress.test.ts, on shapes where qemu's are deterministic or checkable).
 */
export function collapseProgress(stdout: string): string {
  const parts = stdout.split('\r').filter((p) => !/^ {4}\((?!0\.00\/)(?!100\.00\/)[0-9.]+\/100%\)$/.test(p));
  return parts.filter((p, i) => i === 0 || p !== parts[i - 1]).join('\r');
}

/** Runs of one repeated progress line as one: qemu repeats 0% and 100% once per wake of its loop. */
export function collapseRepeats(stdout: string): string {
  const parts = stdout.split('\r');
  return parts.filter((p, i) => i === 0 || p !== parts[i - 1]).join('\r');
}

/** Both files read the same guest data (qemu-img compare -q exit 0). */
export function sameDisk(version: OracleVersion, a: string, b: string, fmtA = 'qcow2', fmtB = fmtA): boolean {
  return runQemu(version, ['compare', '-q', '-f', fmtA, '-F', fmtB, a, b]).status === 0;
}

/** qemu-img check finds nothing wrong. */
export function assertCheckClean(version: OracleVersion, file: string, format = 'qcow2'): void {
  const r = runQemu(version, ['check', '-f', format, file]);
  assert.equal(r.status, 0, `check ${file}: ${r.stdout}${r.stderr}`);
}

/** check --output=json's status and counts, fragmentation and the name left out (they follow the layout). */
export function checkVerdict(version: OracleVersion, file: string): string {
  const r = runQemu(version, ['check', '--output=json', file]);
  const counts = JSON.parse(r.stdout) as Record<string, unknown>;
  delete counts['fragmented-clusters'];
  delete counts.filename;
  return JSON.stringify({ status: r.status, ...counts });
}
