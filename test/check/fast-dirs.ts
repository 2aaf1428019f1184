// TwinDirs (rebase/harness.ts), RepairDirs (repair-harness.ts) and ResizeDirs (resize/harness.ts) with instar's unsandboxed side
// run in this process (instar-sync.ts) instead of a Node launch per run: the same files, command
// lines and results; sandboxed runs, INSTAR_TEST_CLI=1 and the long tier launch the built CLI.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { oracle, runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { TwinDirs as CliTwinDirs, type TwinRun } from '../rebase/harness.ts';
import { RepairDirs as CliRepairDirs, type RepairRun } from './repair-harness.ts';
import { ResizeDirs as CliResizeDirs, type ResizeRun } from '../resize/harness.ts';
import { instarSync } from './instar-sync.ts';

export class TwinDirs extends CliTwinDirs {
  private runs = 0;

  override run(version: OracleVersion, files: Record<string, Uint8Array>, args: string[], opts: { sandboxed?: boolean; instarArgs?: string[] } = {}): TwinRun {
    const base = join(this.root, `f${this.runs++}`);
    const qemuDir = join(base, 'q');
    const instarDir = join(base, 'i');
    for (const dir of [qemuDir, instarDir]) {
      mkdirSync(dir, { recursive: true });
      for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
    }
    const qemu = runQemu(version, args, { cwd: qemuDir, timeoutMs: 30_000 });
    qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
    const sandbox = opts.sandboxed ? [] : ['--sandbox=none'];
    const instar = instarSync([...args, ...(opts.instarArgs ?? []), '--qemu-version', version, ...sandbox], { cwd: instarDir, timeoutMs: 30_000 });
    return { qemu, instar, qemuDir, instarDir };
  }
}

export class RepairDirs extends CliRepairDirs {
  private runs = 0;

  override run(version: OracleVersion, name: string, bytes: Uint8Array, args: string[], opts: { sandboxed?: boolean; skipQemu?: boolean; instarArgs?: string[]; viaEnv?: boolean; files?: Record<string, Uint8Array> } = {}): RepairRun {
    const base = join(this.root, `f${this.runs++}`);
    const qdir = join(base, 'q');
    const idir = join(base, 'i');
    mkdirSync(qdir, { recursive: true });
    mkdirSync(idir, { recursive: true });
    writeFileSync(join(qdir, name), bytes);
    writeFileSync(join(idir, name), bytes);
    for (const [other, content] of Object.entries(opts.files ?? {})) {
      writeFileSync(join(qdir, other), content);
      writeFileSync(join(idir, other), content);
    }
    const qemu = opts.skipQemu ? { stdout: '', stderr: '', status: null, signal: null } : runQemu(version, args, { cwd: qdir, timeoutMs: 30_000 });
    qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
    const sandbox = opts.sandboxed ? [] : ['--sandbox=none'];
    const instar = opts.viaEnv
      ? instarSync([...args, ...(opts.instarArgs ?? [])], { cwd: idir, timeoutMs: 30_000, env: { INSTAR_QEMU_VERSION: version, INSTAR_SANDBOX: opts.sandboxed ? '' : 'none' } })
      : instarSync([...args, ...(opts.instarArgs ?? []), '--qemu-version', version, ...sandbox], { cwd: idir, timeoutMs: 30_000 });
    return {
      qemu, instar,
      qemuFile: readFileSync(join(qdir, name)), instarFile: readFileSync(join(idir, name)),
      qemuPath: join(qdir, name), instarPath: join(idir, name),
    };
  }
}

export class ResizeDirs extends CliResizeDirs {
  private runs = 0;

  override run(version: OracleVersion, files: Record<string, Uint8Array>, args: string[], opts: { sandboxed?: boolean; instarArgs?: string[] } = {}): ResizeRun {
    const base = join(this.root, `f${this.runs++}`);
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
    const instar = instarSync([...globals, 'resize', ...args], { cwd: idir, timeoutMs: 30_000 });
    return { qemu, instar, qdir, idir };
  }
}
