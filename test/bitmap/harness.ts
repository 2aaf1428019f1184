// Differential runs of `qemu-img bitmap`: the oracle and instar each work on their own copy of
// the same files (same names, so messages compare byte for byte); afterwards stdout, stderr, the
// exit status and every file are compared. qemu names the image's node "#block1NN" with two
// random digits: those digits are masked on both sides.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, oracle, runInstar, runQemu, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { tiered } from '../helpers/long.ts';
import { runInProcess } from '../helpers/in-process.ts';

export const QEMU_IO = (version: OracleVersion) => oracle(version, 'qemu-io');

/** Each case on both oracles in the long tier; in the short tier on one, alternating (7.2 and 10.0 agree on these). */
export function versionMatrix<T>(cases: readonly T[]): [OracleVersion, T][] {
  const all = cases.flatMap((c, i) => VERSIONS.map((v, j): [OracleVersion, T, boolean] => [v, c, (i + j) % 2 === 0]));
  return tiered(all, ([, , short]) => short).map(([v, c]): [OracleVersion, T] => [v, c]);
}

const maskNode = (text: string) => text.replace(/#block\d+/g, '#blockNNN');

export class Workspace {
  readonly root = mkdtempSync(join(tmpdir(), 'instar-bitmap-'));
  private n = 0;

  path(name: string): string {
    return join(this.root, name);
  }

  /** Runs a qemu-img (7.2) command that builds a fixture; fails the test when it fails. */
  qemu(args: string[]): void {
    const r = runQemu('7.2', args, { cwd: this.root });
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
  }

  /** Writes through qemu-io: enabled bitmaps of the image record the writes. */
  io(file: string, commands: string[]): void {
    const r = runQemu('7.2', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), this.path(file)], {}, 'qemu-io');
    assert.equal(r.status, 0, r.stderr);
  }

  read(name: string): Buffer {
    return readFileSync(this.path(name));
  }

  /** A fresh pair of directories holding copies of `files`. */
  pair(files: Record<string, Uint8Array>): [string, string] {
    const base = join(this.root, `run${this.n++}`);
    const dirs: [string, string] = [join(base, 'q'), join(base, 'i')];
    for (const d of dirs) {
      mkdirSync(d, { recursive: true });
      for (const [name, bytes] of Object.entries(files)) writeFileSync(join(d, name), bytes);
    }
    return dirs;
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

export interface Compared {
  qemu: RunResult;
  instar: RunResult;
}

/** Runs `bitmap <args>` through the oracle and instar on copies of `files`; asserts the same result and files. */
export async function compareBitmap(ws: Workspace, version: OracleVersion, files: Record<string, Uint8Array>, args: string[], opts: { sandboxed?: boolean } = {}): Promise<Compared> {
  const [qd, id] = ws.pair(files);
  const what = `${version} bitmap ${args.join(' ')}`;
  const qemu = runQemu(version, ['bitmap', ...args], { cwd: qd, timeoutMs: 20_000 });
  qemu.stderr = qemu.stderr.replaceAll(oracle(version), 'qemu-img');
  const instarArgs = [`--qemu-version=${version}`, 'bitmap', ...args];
  const instar = opts.sandboxed ? runInstar(instarArgs, { cwd: id }) : await runInProcess(['--sandbox=none', ...instarArgs], id);
  assert.equal(maskNode(instar.stderr), maskNode(qemu.stderr), `${what}: stderr`);
  assert.equal(instar.stdout, qemu.stdout, `${what}: stdout`);
  assert.equal(instar.status, qemu.status, `${what}: exit status`);
  for (const name of readdirSync(qd)) {
    const q = readFileSync(join(qd, name));
    const i = readFileSync(join(id, name));
    assert.ok(q.equals(i), `${what}: ${name} differs (${q.length} vs ${i.length} bytes)`);
  }
  return { qemu, instar };
}
