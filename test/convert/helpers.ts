// Shared pieces of the convert tests: seeded content, images built by the oracles at test time,
// and one call that converts with instar and with both oracles and compares the results.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'instar-convert-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export { prng };

/** A raw file of `size` bytes: 64 KiB blocks of random, text, zeros or half zeros, by seed. */
export function patternBytes(size: number, seed: number): Buffer {
  const next = prng(seed);
  const buf = Buffer.alloc(size);
  for (let off = 0; off < size; off += 65536) {
    const end = Math.min(size, off + 65536);
    const kind = next() % 4;
    if (kind === 0) for (let i = off; i + 4 <= end; i += 4) buf.writeUInt32LE(next(), i);
    else if (kind === 1) buf.write(`convert test block ${off} seed ${seed}\n`.repeat(3000), off, end - off, 'latin1');
    else if (kind === 3) for (let i = off + Math.floor((end - off) / 2 / 4) * 4; i + 4 <= end; i += 4) buf.writeUInt32LE(next(), i);
  }
  return buf;
}

export function writePattern(path: string, size: number, seed: number): void {
  writeFileSync(path, patternBytes(size, seed));
}

export function qemu(args: string[], version: OracleVersion = '10.0', tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): string {
  const r = runQemu(version, args, { timeoutMs: 120_000 }, tool);
  if (r.status !== 0) throw new Error(`${tool} ${version} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** qemu-io writes: each item is a qemu-io command such as "write -P 7 0 64k". */
export function qemuIo(path: string, commands: string[], format?: string): void {
  qemu([...(format ? ['-f', format] : []), ...commands.flatMap((c) => ['-c', c]), path], '10.0', 'qemu-io');
}

export const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

export interface Converted {
  result: RunResult;
  hash?: string;
  size?: number;
  blocks?: number;
}

function outcome(result: RunResult, out: string): Converted {
  if (!existsSync(out)) return { result };
  const st = statSync(out);
  return { result, hash: sha256(out), size: st.size, blocks: st.blocks };
}

/** `convert <args> <out>` with instar (sandboxed by default) and with one oracle, in `cwd`. */
export function convertBoth(cwd: string, args: string[], env: Record<string, string> = {}): { instar: Converted; oracles: Record<OracleVersion, Converted> } {
  const instar = convertInstar(cwd, args, env);
  const oracles = {} as Record<OracleVersion, Converted>;
  for (const v of VERSIONS) {
    const theirs = join(cwd, `out-${v}.raw`);
    rmSync(theirs, { force: true });
    oracles[v] = outcome(runQemu(v, ['convert', ...args, theirs], { cwd, timeoutMs: 120_000 }), theirs);
    rmSync(theirs, { force: true });
  }
  return { instar, oracles };
}

/** instar's half of convertBoth: `convert <args> <out>` in `cwd`, its outcome, the output removed. */
export function convertInstar(cwd: string, args: string[], env: Record<string, string> = {}): Converted {
  const mine = join(cwd, 'out-instar.raw');
  rmSync(mine, { force: true });
  const instar = outcome(runInstar(['convert', ...args, mine], { cwd, env, timeoutMs: 120_000 }), mine);
  rmSync(mine, { force: true });
  return instar;
}

/** Slack for sparseness: qemu's zero detection and ours may differ by a few blocks. */
export const BLOCK_SLACK = 128; // 64 KiB in 512-byte blocks

/**
 * good.hds in `dir` (a 1 MiB parallels image, 64 KiB of 0x5a at 0, made by the oracles) and, for
 * each entry of `variants`, a copy with that 64-bit sector count in its header (offset 36): images
 * whose byte size wraps in 64 bits or goes negative, so that qemu cannot tell it (formats/sector-count.ts).
 */
export function parallelsWithSectors(dir: string, variants: Record<string, bigint>): void {
  const good = join(dir, 'good.hds');
  qemu(['create', '-q', '-f', 'parallels', good, '1M']);
  qemuIo(good, ['write -P 0x5a 0 64k'], 'parallels');
  for (const [name, sectors] of Object.entries(variants)) {
    const bytes = readFileSync(good);
    bytes.writeBigUInt64LE(sectors, 36);
    writeFileSync(join(dir, name), bytes);
  }
}
