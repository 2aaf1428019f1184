// resize changes its image, so qemu-img and instar each resize their own copy: the same files in
// two directories, the same command line (instar's own options before the subcommand: 7.2's
// resize takes its last argument as the size), then stdout, stderr, exit status and every file
// compared byte for byte.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, type OracleVersion, type RunOpts, type RunResult } from '../helpers/oracles.ts';

export interface ResizeRun {
  qemu: RunResult;
  instar: RunResult;
  qdir: string;
  idir: string;
}

export class ResizeDirs {
  readonly root = mkdtempSync(join(tmpdir(), 'instar-resize-'));
  private n = 0;

  /** A scratch path for building images. */
  path(name: string): string {
    return join(this.root, name);
  }

  /** Makes `name` in the build directory with qemu-img 10.0 (-o `options`) and qemu-io `writes`; its bytes. */
  build(name: string, options: string, size: string, ...writes: string[]): Uint8Array {
    const dir = this.path('build');
    mkdirSync(dir, { recursive: true });
    assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', options, name, size], { cwd: dir }).status, 0, `create ${name}`);
    if (writes.length) assert.equal(runQemu('10.0', ['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), name], { cwd: dir }, 'qemu-io').status, 0, `qemu-io ${name}`);
    return readFileSync(join(dir, name));
  }

  run(version: OracleVersion, files: Record<string, Uint8Array>, args: string[], opts: { sandboxed?: boolean; instarArgs?: string[] } = {}): ResizeRun {
    const base = join(this.root, `run${this.n++}`);
    const qdir = join(base, 'q');
    const idir = join(base, 'i');
    mkdirSync(qdir, { recursive: true });
    mkdirSync(idir, { recursive: true });
    for (const [name, bytes] of Object.entries(files)) {
      writeFileSync(join(qdir, name), bytes);
      writeFileSync(join(idir, name), bytes);
    }
    const qemu = runQemu(version, ['resize', ...args], { cwd: qdir, timeoutMs: 30_000 });
    qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
    const globals = ['--qemu-version', version, ...(opts.sandboxed ? [] : ['--sandbox=none']), ...(opts.instarArgs ?? [])];
    const instar = this.instar([...globals, 'resize', ...args], { cwd: idir, timeoutMs: 30_000 });
    return { qemu, instar, qdir, idir };
  }

  /** How instar is run: the built CLI (fast-dirs.ts runs unsandboxed command lines in-process). */
  protected instar(args: string[], opts: RunOpts): RunResult {
    return runInstar(args, opts);
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** stdout, stderr, exit status and every file alike. */
export function assertSameResize(r: ResizeRun, label: string): void {
  assert.equal(r.instar.stderr, r.qemu.stderr, `${label}: stderr`);
  assert.equal(r.instar.stdout, r.qemu.stdout, `${label}: stdout`);
  assert.equal(r.instar.status, r.qemu.status, `${label}: exit status`);
  assertSameFiles(r, label);
}

export function assertSameFiles(r: ResizeRun, label: string): void {
  const names = readdirSync(r.qdir).sort();
  assert.deepEqual(readdirSync(r.idir).sort(), names, `${label}: the same files`);
  for (const name of names) {
    const q = readFileSync(join(r.qdir, name));
    const i = readFileSync(join(r.idir, name));
    assert.equal(i.length, q.length, `${label}: ${name} has qemu's length`);
    assert.ok(i.equals(q), `${label}: ${name} has qemu's bytes`);
  }
}
