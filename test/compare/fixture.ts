// Images for the compare tests, built at test time with qemu-img 7.2 and qemu-io from one
// deterministic guest content: data, zero holes, data, a hole, and a data tail (so the last byte is
// data). Each format is made by `convert` from that raw file, so identical pairs are known to be
// identical and a changed byte in one copy is the only difference.
import { readFileSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { ImageDir, assertSameOutput, type CompareOptions } from '../differential/harness.ts';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';

export const MiB = 1024 * 1024;
export const SIZE = 5 * MiB;

/** Deterministic bytes (a 32-bit LCG), so a failure reproduces. */
function pattern(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  let x = seed >>> 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    buf[i] = x >>> 24;
  }
  return buf;
}

/** The shared guest content: [0,1M) data, [1M,2M) zeros, [2M,3.5M) data, zeros, [5M-64k,5M) data. */
export function content(): Buffer {
  const buf = Buffer.alloc(SIZE);
  pattern(MiB, 1).copy(buf, 0);
  pattern(1.5 * MiB, 2).copy(buf, 2 * MiB);
  pattern(64 * 1024, 3).copy(buf, SIZE - 64 * 1024);
  return buf;
}

/** A raw file with `content()` and the byte at each offset flipped (bitwise not). */
export function writeRaw(dir: ImageDir, name: string, flips: number[] = [], size = SIZE): void {
  const buf = Buffer.alloc(size);
  content().copy(buf, 0, 0, Math.min(size, SIZE));
  for (const at of flips) buf[at] = ~buf[at] & 0xff;
  writeFileSync(dir.path(name), buf);
}

/** Converts a raw file of the directory to another format (qemu-img 7.2). */
export function convert(dir: ImageDir, from: string, to: string, format: string, extra: string[] = []): void {
  dir.img('convert', '-f', 'raw', '-O', format, ...extra, from, to);
}

/**
 * Asserts what qemu-img 7.2 says (so the case tests what it claims to), then that instar prints
 * the same bytes and exit status as both oracles.
 */
export async function check(dir: ImageDir, args: string[], expect: { status: number; stdout?: string | RegExp }, opts: CompareOptions = {}): Promise<void> {
  const oracleRun = runQemu('7.2', args, { cwd: dir.dir });
  assert.equal(oracleRun.status, expect.status, `qemu-img 7.2 ${args.join(' ')}: ${oracleRun.stdout}${oracleRun.stderr}`);
  if (typeof expect.stdout === 'string') assert.equal(oracleRun.stdout, expect.stdout);
  else if (expect.stdout) assert.match(oracleRun.stdout, expect.stdout);
  await assertSameOutput(dir.dir, args, opts);
}

/** The raw bytes of a file in the directory (for sanity checks on the fixtures). */
export const bytesOf = (dir: ImageDir, name: string): Buffer => readFileSync(dir.path(name));

export { ImageDir, VERSIONS };
