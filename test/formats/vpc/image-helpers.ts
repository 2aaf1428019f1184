// Shared by the vpc and vhdx driver tests: build images with the oracles, open them with a
// driver, and compare info, bytes and allocation with what each qemu-img reports.
import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FdDevice, MemoryDevice } from '../../../src/io/fd-device.ts';
import { ImageError, type Driver, type Image, type NodeInfo, type OpenContext } from '../../../src/formats/types.ts';
import { profileFor } from '../../../src/output/profile.ts';
import { runQemu, type OracleVersion } from '../../helpers/oracles.ts';

export function tempDir(tag: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `instar-${tag}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Runs an oracle and fails the test with its stderr when it fails. */
export function qemuOk(version: OracleVersion, args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): string {
  const r = runQemu(version, args, { timeoutMs: 120_000 }, tool);
  assert.equal(r.status, 0, `${tool} ${version} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** A raw file of seeded random, text and zero runs (64 KiB each), with a ragged tail. */
export function writeSource(path: string, size: number, seed: number): void {
  const key = createHash('sha256').update(`seed${seed}`).digest().subarray(0, 16);
  const random = createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
  const text = Buffer.from('The quick brown fox jumps over the lazy VHD. ');
  const out = Buffer.alloc(size);
  const run = 65536;
  for (let at = 0, i = 0; at < size; at += run, i++) {
    const end = Math.min(size, at + run);
    if (i % 4 === 0) random.copy(out, at, at, end);
    else if (i % 4 === 1) for (let p = at; p < end; p += text.length) text.copy(out, p, 0, Math.min(text.length, end - p));
    else if (i % 4 === 3) random.copy(out, at, at, Math.min(end, at + run / 2));
  }
  writeFileSync(path, out);
}

export function withImage<T>(driver: Driver, path: string, ctx: OpenContext, fn: (img: Image) => T): T {
  const fd = openSync(path, 'r');
  try {
    return fn(driver.open(new FdDevice(fd, false), ctx));
  } finally {
    closeSync(fd);
  }
}

export function ctxFor(version: OracleVersion): OpenContext {
  return { writable: false, profile: { vhdCurrentSize: profileFor(version).vhdCurrentSize } };
}

/** SHA-256 of the whole guest-visible disk, read in 4 MiB pieces. */
export function hashImage(img: Image): string {
  const h = createHash('sha256');
  const buf = new Uint8Array(4 * 1024 * 1024);
  for (let at = 0; at < img.virtualSize; at += buf.length) {
    const part = buf.subarray(0, Math.min(buf.length, img.virtualSize - at));
    img.read(part, at);
    h.update(part);
  }
  return h.digest('hex');
}

/** SHA-256 of what `qemu-img convert -O raw` makes of the image. */
export function hashQemuRaw(version: OracleVersion, path: string, format: string, dir: string): string {
  const out = join(dir, `raw-${version}.img`);
  qemuOk(version, ['convert', '-f', format, '-O', 'raw', path, out]);
  const hash = createHash('sha256').update(readFileSync(out)).digest('hex');
  rmSync(out);
  return hash;
}

/** `qemu-img info --output=json`, without the fields the host fills in. */
export function oracleInfo(version: OracleVersion, path: string, format: string): Record<string, unknown> {
  const info = JSON.parse(qemuOk(version, ['info', '--output=json', '-f', format, path]));
  for (const k of ['filename', 'actual-size', 'children']) delete info[k];
  return info;
}

export function assertInfoMatches(ours: NodeInfo, version: OracleVersion, path: string, format: string): void {
  const theirs = oracleInfo(version, path, format);
  const mine: Record<string, unknown> = { ...ours };
  assert.deepEqual(Object.keys(mine).sort(), Object.keys(theirs).sort(), `info keys vs qemu-img ${version}`);
  for (const k of Object.keys(theirs)) assert.deepEqual(mine[k], theirs[k], `info '${k}' vs qemu-img ${version}`);
}

interface MapEntry {
  start: number;
  length: number;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** Our extents, merged the way qemu-img map merges its entries. */
export function ourMap(img: Image): MapEntry[] {
  const out: MapEntry[] = [];
  for (let at = 0; at < img.virtualSize; ) {
    const e = img.extent(at, img.virtualSize - at);
    assert.ok(e.length > 0 && e.offset === at, `extent at ${at} must advance`);
    const entry: MapEntry = { start: at, length: e.length, zero: e.kind !== 'data', data: e.kind === 'data' };
    if (e.hostOffset !== undefined) entry.offset = e.hostOffset;
    const last = out[out.length - 1];
    const contiguous = last && (last.offset === undefined ? entry.offset === undefined : entry.offset === last.offset + last.length);
    if (last && last.zero === entry.zero && last.data === entry.data && contiguous) last.length += entry.length;
    else out.push(entry);
    at += e.length;
  }
  return out;
}

export function oracleMap(version: OracleVersion, path: string, format: string): MapEntry[] {
  const raw = JSON.parse(qemuOk(version, ['map', '--output=json', '-f', format, path])) as Record<string, unknown>[];
  // An empty disk maps as one zero-length entry; the map renderer's business, not an extent.
  return raw.filter((r) => r.length !== 0).map((r) => {
    assert.equal(r.present, true);
    assert.equal(r.depth, 0);
    const e: MapEntry = { start: r.start as number, length: r.length as number, zero: r.zero as boolean, data: r.data as boolean };
    if (r.offset !== undefined) e.offset = r.offset as number;
    return e;
  });
}

/** The whole stderr of `qemu-img info` refusing to open an image (run under limits). */
export function oracleOpenError(version: OracleVersion, path: string, format: string): string {
  const r = runQemu(version, ['info', '-f', format, path], { timeoutMs: 20_000 });
  assert.notEqual(r.status, 0, `qemu-img ${version} opened ${path}`);
  return r.stderr.trimEnd();
}

/**
 * The stderr qemu-img would print for our open error: error_report lines (the error's `reports`)
 * first, then qemu-img's "Could not open '<name>': " and the message.
 */
export function ourOpenError(driver: Driver, bytes: Uint8Array, ctx: OpenContext, name: string, label = ''): string {
  const before = process.memoryUsage().arrayBuffers;
  const started = Date.now();
  try {
    driver.open(new MemoryDevice(bytes), { ...ctx, displayName: name });
  } catch (e) {
    assert.ok(e instanceof ImageError, `expected ImageError, got ${String(e)}`);
    assert.ok(Date.now() - started < 3000, 'open must fail fast');
    assert.ok(process.memoryUsage().arrayBuffers - before < 256 * 1024 * 1024, 'open must not balloon memory');
    const reports = ((e as ImageError & { reports?: string[] }).reports ?? []).map((l) => `qemu-img: ${l}\n`);
    return `${reports.join('')}qemu-img: Could not open '${name}': ${e.message}`;
  }
  assert.fail(`driver opened a hostile image ${label}`);
}

/** Reads at odd offsets and lengths must agree with one whole-disk read (a small image). */
export function assertUnalignedReads(img: Image, seed: number): void {
  const whole = new Uint8Array(img.virtualSize);
  img.read(whole, 0);
  let state = seed >>> 0 || 1;
  const next = (n: number) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
  for (let i = 0; i < 300; i++) {
    const offset = next(img.virtualSize);
    const length = Math.min(img.virtualSize - offset, 1 + next(3 * 1024 * 1024));
    const part = new Uint8Array(length).fill(0xee);
    img.read(part, offset);
    assert.ok(Buffer.from(part).equals(whole.subarray(offset, offset + length)), `read of ${length} at ${offset}`);
  }
}
