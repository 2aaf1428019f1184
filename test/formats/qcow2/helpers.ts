// Shared by the qcow2 tests: temp dirs, opening an image with instar's driver, and the oracle's
// view of the same image (its JSON, or the message after "Could not open 'F': ").
import { mkdtempSync, openSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FdDevice } from '../../../src/io/fd-device.ts';
import { ImageError, type NodeInfo } from '../../../src/formats/types.ts';
import { findDriver } from '../../../src/formats/registry.ts';
import assert from 'node:assert/strict';
import { runQemu, VERSIONS, type OracleVersion } from '../../helpers/oracles.ts';

export function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'instar-qcow2-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs the oracle and fails loudly when it fails. */
export function qemu(version: OracleVersion, args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): string {
  const r = runQemu(version, args, {}, tool);
  if (r.status !== 0) throw new Error(`${tool} ${version} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Opens `path` with instar's driver for `format` (read-only) and returns info(), or the error. */
export function instarInfo(path: string, format = 'qcow2'): NodeInfo | ImageError {
  const fd = openSync(path, 'r');
  try {
    return findDriver(format)!.open(new FdDevice(fd, false), { writable: false }).info();
  } catch (e) {
    if (e instanceof ImageError) return e;
    throw e;
  } finally {
    closeSync(fd);
  }
}

/** Fields the host fills in (or that only a newer qemu prints), dropped before comparing. */
const HOST_FIELDS = ['filename', 'actual-size', 'full-backing-filename', 'children', 'backing-image'];

export function oracleInfo(version: OracleVersion, path: string, format?: string): Record<string, unknown> {
  const args = ['info', '--output=json', ...(format ? ['-f', format] : []), path];
  const info = JSON.parse(qemu(version, args)) as Record<string, unknown>;
  for (const k of HOST_FIELDS) delete info[k];
  return info;
}

/** What instar's NodeInfo should look like to the given oracle: without host-only fields. */
export function asOracleSees(version: OracleVersion, node: NodeInfo): Record<string, unknown> {
  const copy = JSON.parse(JSON.stringify(node)) as Record<string, unknown>;
  delete copy['data-file'];
  const spec = copy['format-specific'] as { data: Record<string, unknown> } | undefined;
  const encrypt = spec?.data.encrypt as Record<string, unknown> | undefined;
  // 'detached-header' joined QCryptoBlockInfoLUKS in qemu 9.0.
  if (encrypt && version === '7.2') delete encrypt['detached-header'];
  return copy;
}

/** The oracle's error for an image it refuses: the text after "Could not open 'F': ". */
export function oracleError(version: OracleVersion, path: string, format?: string): string {
  const r = runQemu(version, ['info', ...(format ? ['-f', format] : []), path], { timeoutMs: 20_000 });
  if (r.status === 0) return `(opened: ${r.stdout.split('\n')[1] ?? ''})`;
  const prefix = `qemu-img: Could not open '${path}': `;
  if (!r.stderr.startsWith(prefix)) throw new Error(`unexpected oracle stderr: ${r.stderr}`);
  return r.stderr.slice(prefix.length).replace(/\n$/, '');
}

/** The order QAPI ImageInfoSpecificQCow2 declares its members in (the renderer relies on it). */
export const QCOW2_SPECIFIC_ORDER = [
  'compat', 'data-file', 'data-file-raw', 'extended-l2', 'lazy-refcounts', 'corrupt',
  'refcount-bits', 'encrypt', 'bitmaps', 'compression-type',
];
export const IMAGE_INFO_ORDER = [
  'format', 'dirty-flag', 'virtual-size', 'cluster-size', 'encrypted', 'compressed',
  'backing-filename', 'backing-filename-format', 'snapshots', 'format-specific', 'data-file',
];

/** Whether `keys` appear in the same relative order as in `schema`. */
export function inSchemaOrder(keys: string[], schema: string[]): boolean {
  const idx = keys.map((k) => schema.indexOf(k));
  return idx.every((v, i) => v >= 0 && (i === 0 || v > idx[i - 1]));
}

/** A file with the given bytes. */
export function writeImage(dir: string, name: string, bytes: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

/**
 * Writes each damaged copy of `original` (patched by its case) and compares instar's open with
 * both oracles': the same refusal message, or the same info when they open it. Returns the
 * disagreements, one line each.
 */
export function damagedImageMismatches<C>(dir: string, original: Buffer, cases: [string, (bytes: Buffer, ctx: C) => void][], ctx: C): string[] {
  const mismatches: string[] = [];
  for (const [name, patch] of cases) {
    const bytes = Buffer.from(original);
    patch(bytes, ctx);
    const path = join(dir, 'damaged.qcow2');
    writeFileSync(path, bytes);
    const got = instarInfo(path);
    for (const v of VERSIONS) {
      const r = oracleError(v, path, 'qcow2');
      if (r.startsWith('(opened')) {
        if (got instanceof ImageError) mismatches.push(`${name}: instar refused (${got.message}), oracle ${v} opened`);
        else assert.deepStrictEqual(asOracleSees(v, got), oracleInfo(v, path, 'qcow2'), `${name}: oracle ${v}`);
      } else if (!(got instanceof ImageError) || got.message !== r) {
        mismatches.push(`${name}: instar ${got instanceof ImageError ? got.message : 'opened'}; oracle ${v}: ${r}`);
      }
    }
  }
  return mismatches;
}
