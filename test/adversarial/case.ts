// One hostile image (or set of files) and what every command must do with it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oracle } from '../helpers/oracles.ts';
import type { CommandName, Expectations } from './outcomes.ts';

export interface HostileCase {
  name: string;
  category: string;
  /** The case's own directory (the path policy's allowlist): file name → bytes or a symlink. */
  files: Record<string, Buffer | string | { symlink: string }>;
  /** The image given to the commands (a file of `files`); 'top' when absent. */
  top?: string;
  /** Paths that no system call of the run may name (besides the general allowlist check). */
  targets: string[];
  expect: Expectations;
  /** Known defects, per command: a failing check there is reported as TODO with this note. */
  todo?: Partial<Record<CommandName, string>>;
}

export interface CraftContext {
  /** A directory outside every case's allowlist, holding the decoy `secret.raw`. */
  outside: string;
}

const cache = new Map<string, Buffer>();

/** Bytes of an image made by qemu-img create (cached per argument list). */
export function qemuMade(format: string, size: string, options: string[] = []): Buffer {
  const key = [format, size, ...options].join(' ');
  const hit = cache.get(key);
  if (hit) return hit;
  const dir = mkdtempSync(join(tmpdir(), 'instar-adv-seed-'));
  try {
    const file = join(dir, 'seed');
    const r = spawnSync(oracle('7.2'), ['create', '-q', '-f', format, ...options, file, size], { encoding: 'utf8', timeout: 30_000 });
    if (r.status !== 0) throw new Error(`qemu-img create ${key}: ${r.stderr}`);
    const bytes = readFileSync(file);
    cache.set(key, bytes);
    return bytes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes the case's files (and symlinks) into `dir`, which exists and is empty. */
export function writeCaseFiles(c: HostileCase, dir: string): void {
  for (const [name, content] of Object.entries(c.files)) {
    const path = join(dir, name);
    if (typeof content === 'object' && !Buffer.isBuffer(content)) symlinkSync(content.symlink, path);
    else writeFileSync(path, content);
  }
}
