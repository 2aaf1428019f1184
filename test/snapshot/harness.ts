// Runs qemu-img snapshot and instar on two copies of the same image (same file name, each in its
// own directory, so messages that name files compare byte for byte) and returns both files after.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';

// Listings print dates in local time: the same zone for qemu-img, the CLI and in-process runs.
process.env.TZ = 'UTC';

export interface PairRun {
  qemu: RunResult;
  instar: RunResult;
  qemuFile: Buffer;
  instarFile: Buffer;
}

export interface RunOptions {
  sandboxed?: boolean;
  instarArgs?: string[];
}

export interface Session {
  (args: string[], opts?: RunOptions): Promise<PairRun>;
  /** Runs qemu-io commands on both copies. */
  io(commands: string[]): void;
  /** The oracle's copy and instar's. */
  paths: readonly [string, string];
}

export class PairDirs {
  readonly root = mkdtempSync(join(tmpdir(), 'instar-snapshot-'));
  private n = 0;

  /** A fresh pair of directories holding `files` (name → bytes). */
  private pair(files: Record<string, Uint8Array>): [string, string] {
    const base = join(this.root, String(this.n++));
    const dirs: [string, string] = [join(base, 'q'), join(base, 'i')];
    for (const d of dirs) {
      mkdirSync(d, { recursive: true });
      for (const [name, bytes] of Object.entries(files)) writeFileSync(join(d, name), bytes);
    }
    return dirs;
  }

  /** Runs `args` (whose last argument names `file`) through the oracle and instar. */
  run(version: OracleVersion, files: Record<string, Uint8Array>, file: string, args: string[], opts: RunOptions = {}): Promise<PairRun> {
    return this.session(version, files, file)(args, opts);
  }

  /** A pair of directories kept across runs: each call runs one command on both copies. */
  session(version: OracleVersion, files: Record<string, Uint8Array>, file: string): Session {
    const [qd, id] = this.pair(files);
    const env = { TZ: 'UTC' };
    const read = (d: string) => { try { return readFileSync(join(d, file)); } catch { return Buffer.alloc(0); } };
    const step = async (args: string[], opts: RunOptions = {}): Promise<PairRun> => {
      const qemu = runQemu(version, args, { cwd: qd, env });
      // 10.0's usage errors name the program as run: the oracle's path, where instar says qemu-img.
      qemu.stderr = qemu.stderr.replaceAll(oracle(version), 'qemu-img');
      const instarArgs = [`--qemu-version=${version}`, ...(opts.instarArgs ?? [])];
      const instar = opts.sandboxed ? runInstar([...instarArgs, ...args], { cwd: id, env }) : await runInProcess(['--sandbox=none', ...instarArgs, ...args], id);
      return { qemu, instar, qemuFile: read(qd), instarFile: read(id) };
    };
    step.io = (commands: string[]) => {
      for (const d of [qd, id]) {
        const io = runQemu('7.2', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), join(d, file)], {}, 'qemu-io');
        assert.equal(io.status, 0, io.stderr);
      }
    };
    step.paths = [join(qd, file), join(id, file)] as const;
    return step;
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

export function assertSameOutput(r: PairRun, what: string): void {
  assert.equal(r.instar.stderr, r.qemu.stderr, `${what}: stderr`);
  assert.equal(r.instar.stdout, r.qemu.stdout, `${what}: stdout`);
  assert.equal(r.instar.status, r.qemu.status, `${what}: exit status`);
}

/** A qcow2 image's bytes with every snapshot's date zeroed (instar stamps its own time). */
export function maskSnapshotDates(image: Buffer): Buffer {
  const b = Buffer.from(image);
  if (b.length < 72) return b;
  const count = b.readUInt32BE(60);
  let at = Number(b.readBigUInt64BE(64));
  for (let i = 0; i < count && at + 40 <= b.length; i++) {
    at = Math.ceil(at / 8) * 8;
    b.fill(0, at + 16, at + 24);
    at += 40 + b.readUInt32BE(at + 36) + b.readUInt16BE(at + 12) + b.readUInt16BE(at + 14);
  }
  return b;
}

/** Creates an image with the 7.2 oracle (and optional qemu-io commands) and returns its bytes. */
export function buildImage(dir: string, name: string, createArgs: string[], ioCommands: string[] = []): Uint8Array {
  const path = join(dir, name);
  const created = runQemu('7.2', ['create', '-q', ...createArgs.slice(0, -1), path, createArgs.at(-1) as string]);
  assert.equal(created.status, 0, created.stderr);
  if (ioCommands.length > 0) {
    const io = runQemu('7.2', ['-f', 'qcow2', ...ioCommands.flatMap((c) => ['-c', c]), path], {}, 'qemu-io');
    assert.equal(io.status, 0, io.stderr);
  }
  return new Uint8Array(readFileSync(path));
}
