// Shared by the vdi, qcow, parallels and qed driver tests: open an image (and its backing chain)
// with instar's drivers and compare info, bytes and `map` with both qemu-img oracles.
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { FdDevice, MemoryDevice } from '../../../src/io/fd-device.ts';
import { findDriver } from '../../../src/formats/registry.ts';
import { ImageError, type Image } from '../../../src/formats/types.ts';
import { VERSIONS, runQemu, type OracleVersion } from '../../helpers/oracles.ts';
import { hashImage, hashQemuRaw, qemuOk } from '../vpc/image-helpers.ts';
import type { MapEntry as ApiMapEntry } from '../../../src/api.ts';

export { qemuOk, tempDir, writeSource, assertUnalignedReads, hashImage } from '../vpc/image-helpers.ts';

/** Opens `path` as `format` and, level by level, the backing files it names (formats given). */
export function openChain(path: string, formats: string[], run: (img: Image) => void): void {
  const fds: number[] = [];
  try {
    let top: Image | undefined;
    let above: Image | undefined;
    let file = path;
    for (const format of formats) {
      const fd = openSync(file, 'r');
      fds.push(fd);
      const img = findDriver(format)!.open(new FdDevice(fd, false), { writable: false, displayName: file });
      if (above) above.attachBacking!(img);
      top ??= img;
      above = img;
      const name = img.info()['backing-filename'];
      if (name) file = name.startsWith('/') ? name : join(dirname(file), name);
    }
    run(top!);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/** `qemu-img info --output=json` equals our NodeInfo, minus the fields the host fills in. */
export function assertInfoMatches(ours: object, version: OracleVersion, path: string, format: string): void {
  const theirs = JSON.parse(qemuOk(version, ['info', '--output=json', '-f', format, path])) as Record<string, unknown>;
  for (const k of ['filename', 'actual-size', 'children', 'full-backing-filename']) delete theirs[k];
  assert.deepEqual({ ...ours }, theirs, `info vs qemu-img ${version}`);
}

/** One `map --output=json` entry, as the library types it (qemu-img 7.2+ always prints `present`),
 *  with positions as numbers: the images here are small. */
export type MapEntry = Omit<ApiMapEntry, 'start' | 'length' | 'offset'> & { present: boolean; start: number; length: number; offset?: number };

const sameRun = (a: MapEntry, b: MapEntry): boolean =>
  a.depth === b.depth && a.present === b.present && a.zero === b.zero && a.data === b.data && a.compressed === b.compressed &&
  (a.offset === undefined ? b.offset === undefined : b.offset === a.offset + a.length);

/** Merges adjacent entries the way qemu-img map does. */
function merge(entries: MapEntry[]): MapEntry[] {
  const out: MapEntry[] = [];
  for (const e of entries) {
    const last = out[out.length - 1];
    if (last && sameRun(last, e)) last.length += e.length;
    else out.push({ ...e });
  }
  return out;
}

/** Our extents as `qemu-img map --output=json` entries. */
export function ourMap(img: Image, withCompressed: boolean): MapEntry[] {
  const out: MapEntry[] = [];
  for (let at = 0; at < img.virtualSize; ) {
    const e = img.extent(at, img.virtualSize - at);
    assert.ok(e.length > 0 && e.offset === at, `extent at ${at} must advance`);
    const entry: MapEntry = {
      start: at,
      length: e.length,
      depth: e.depth,
      present: e.kind !== 'unallocated',
      zero: e.kind !== 'data' || !!e.zeroData,
      data: e.kind === 'data',
    };
    if (withCompressed) entry.compressed = !!e.compressed;
    if (e.hostOffset !== undefined) entry.offset = e.hostOffset;
    out.push(entry);
    at += e.length;
  }
  return merge(out);
}

export function oracleMap(version: OracleVersion, path: string, format: string): MapEntry[] {
  const raw = JSON.parse(qemuOk(version, ['map', '--output=json', '-f', format, path])) as MapEntry[];
  return raw.filter((r) => r.length !== 0);
}

export interface CheckOptions {
  /** Formats of the backing chain below the image, top first. */
  backing?: string[];
}

/** info, whole-disk bytes and map against both oracles. */
export function checkAgainstOracles(path: string, format: string, dir: string, opts: CheckOptions = {}): void {
  openChain(path, [format, ...(opts.backing ?? [])], (img) => {
    for (const v of VERSIONS) {
      assertInfoMatches(img.info(), v, path, format);
      assert.equal(hashImage(img), hashQemuRaw(v, path, format, dir), `bytes vs convert -O raw (${v})`);
      assert.deepEqual(ourMap(img, v !== '7.2'), oracleMap(v, path, format), `map vs qemu-img ${v} map`);
    }
  });
}

/** The stderr of `qemu-img info` refusing an image (run under limits); both oracles must agree. */
export function oracleOpenError(path: string, format: string): string {
  const outs = VERSIONS.map((v) => {
    const r = runQemu(v, ['info', '-f', format, path], { timeoutMs: 20_000 });
    assert.notEqual(r.status, 0, `qemu-img ${v} opened ${path}`);
    return r.stderr.trimEnd();
  });
  assert.equal(outs[0], outs[1], 'the oracles disagree on this image');
  return outs[0];
}

/** Our open failure worded as qemu-img prints it; fails fast and within bounded memory. */
export function ourOpenError(format: string, bytes: Uint8Array, name: string): string {
  const before = process.memoryUsage().arrayBuffers;
  const started = Date.now();
  try {
    findDriver(format)!.open(new MemoryDevice(bytes), { writable: false, displayName: name });
  } catch (e) {
    assert.ok(e instanceof ImageError, `expected ImageError, got ${String(e)}`);
    assert.ok(Date.now() - started < 3000, 'open must fail fast');
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024, 'open must not balloon memory');
    return `qemu-img: Could not open '${name}': ${e.message}`;
  }
  assert.fail(`driver opened a hostile image ${name}`);
}
