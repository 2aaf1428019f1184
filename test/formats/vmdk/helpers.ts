// Shared pieces of the VMDK driver tests: seeded input data, the oracle's view of an image, and
// opening an image the way the host will (answering NeedFilesError by opening names beside it).
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { FdDevice } from '../../../src/io/fd-device.ts';
import { ImageError, type BlockDevice, type Extent, type Image, type NodeInfo } from '../../../src/formats/types.ts';
import { openVmdk } from '../../../src/formats/vmdk/driver.ts';
import { NeedFilesError } from '../../../src/formats/vmdk/errors.ts';
import type { VmdkImage } from '../../../src/formats/vmdk/image.ts';
import { runQemu, type OracleVersion } from '../../helpers/oracles.ts';
import type { MapEntry as ApiMapEntry } from '../../../src/api.ts';
import { prng } from '../../helpers/xorshift.ts';

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'instar-vmdk-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}


/**
 * A raw disk of `size` bytes in 64 KiB blocks cycling random / text / zero / half-zero, with
 * the block kinds chosen by the seed so that grains of every kind sit next to each other.
 */
export function writePattern(path: string, size: number, seed: number): void {
  const next = prng(seed);
  const buf = Buffer.alloc(size);
  const block = 65536;
  for (let off = 0; off < size; off += block) {
    const end = Math.min(size, off + block);
    const kind = next() % 4;
    if (kind === 0) for (let i = off; i < end; i += 4) buf.writeUInt32LE(next(), i);
    else if (kind === 1) buf.write(`instar vmdk test block at ${off} seed ${seed}\n`.repeat(2000), off, end - off, 'latin1');
    else if (kind === 3) for (let i = off + (end - off) / 2; i < end; i += 4) buf.writeUInt32LE(next(), i);
  }
  writeFileSync(path, buf);
}

export function qemuOk(version: OracleVersion, args: string[]): string {
  const r = runQemu(version, args, { timeoutMs: 120_000 });
  if (r.status !== 0) throw new Error(`qemu-img ${version} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

export function oracleInfo(version: OracleVersion, path: string): Record<string, unknown> {
  return JSON.parse(qemuOk(version, ['info', '--output=json', path])) as Record<string, unknown>;
}

/** One `map --output=json` entry, as the library types it (qemu-img 7.2+ always prints `present`),
 *  with positions as numbers: the images here are small. */
export type MapEntry = Omit<ApiMapEntry, 'start' | 'length' | 'offset'> & { present: boolean; start: number; length: number; offset?: number };

export function oracleMap(version: OracleVersion, path: string): MapEntry[] {
  const raw = JSON.parse(qemuOk(version, ['map', '--output=json', path])) as (MapEntry & Record<string, unknown>)[];
  return raw.map((e) => ({
    start: e.start,
    length: e.length,
    depth: e.depth,
    present: e.present,
    zero: e.zero,
    data: e.data,
    ...(e.compressed !== undefined ? { compressed: e.compressed } : {}),
    ...(e.offset !== undefined ? { offset: e.offset } : {}),
  }));
}

/** sha256 of what `qemu-img convert -O raw` writes. */
export function oracleRawHash(version: OracleVersion, path: string, dir: string): string {
  const out = join(dir, `oracle-${version}.raw`);
  qemuOk(version, ['convert', '-O', 'raw', path, out]);
  const hash = createHash('sha256').update(readFileSync(out)).digest('hex');
  rmSync(out);
  return hash;
}

/** sha256 of the whole disk read through the driver, in odd-sized chunks (not grain aligned). */
export function imageHash(img: Image, chunk = 999_999): string {
  const h = createHash('sha256');
  const buf = new Uint8Array(chunk);
  for (let off = 0; off < img.virtualSize; off += chunk) {
    const part = buf.subarray(0, Math.min(chunk, img.virtualSize - off));
    img.read(part, off);
    h.update(part);
  }
  return h.digest('hex');
}

/**
 * Our extents in qemu-img map's terms, merged the way qemu-img map merges them; `version` says
 * whether the oracle prints "compressed".
 */
export function driverMap(img: Image, version: OracleVersion = '7.2'): MapEntry[] {
  const out: MapEntry[] = [];
  for (let off = 0; off < img.virtualSize; ) {
    const e: Extent = img.extent(off, img.virtualSize - off);
    if (e.length <= 0) throw new Error(`empty extent at ${off}`);
    const m: MapEntry = { start: off, length: e.length, depth: e.depth, present: e.kind !== 'unallocated', zero: e.kind !== 'data' || !!e.zeroData, data: e.kind === 'data' };
    if (version !== '7.2') m.compressed = !!e.compressed;
    if (e.hostOffset !== undefined) m.offset = e.hostOffset;
    const last = out.at(-1);
    const contiguous = last && (last.offset === undefined ? m.offset === undefined : m.offset === last.offset + last.length);
    if (last && contiguous && last.depth === m.depth && last.present === m.present && last.zero === m.zero && last.data === m.data && last.compressed === m.compressed) last.length += m.length;
    else out.push(m);
    off += e.length;
  }
  return out;
}

export interface Opened {
  image: VmdkImage;
  /** Every name the driver asked the host for, in order. */
  asked: { role: string; name: string }[];
  close: () => void;
}

/** Opens like the host: on NeedFilesError, open the names relative to the image and retry. */
export function openAsHost(path: string, backing = true): Opened {
  const fds: number[] = [];
  const open = (p: string): BlockDevice => {
    const fd = openSync(p, 'r');
    fds.push(fd);
    return new FdDevice(fd, false);
  };
  const devices = new Map<string, BlockDevice>();
  const asked: Opened['asked'] = [];
  const close = () => fds.forEach((fd) => closeSync(fd));
  try {
    for (let round = 0; ; round++) {
      try {
        const image = openVmdk(open(path), { writable: false, devices, displayName: path });
        const hint = image.info()['backing-filename'];
        if (backing && hint) {
          const parent = openAsHost(isAbsolute(hint) ? hint : join(dirname(path), hint));
          const parentClose = parent.close;
          image.attachBacking(parent.image);
          return { image, asked, close: () => (close(), parentClose()) };
        }
        return { image, asked, close };
      } catch (e) {
        if (!(e instanceof NeedFilesError) || round > 2) throw e;
        for (const f of e.files) {
          asked.push(f);
          // qemu's path_combine: no normalisation, so not path.join.
          const full = isAbsolute(f.name) ? f.name : `${dirname(path)}/${f.name}`;
          if (!existsSync(full)) throw new ImageError(`Could not open '${full}': No such file or directory`);
          devices.set(f.name, open(full));
        }
      }
    }
  } catch (e) {
    close();
    throw e;
  }
}

/** Fields of qemu's info JSON that the host, not the driver, fills in. */
const HOST_FIELDS = ['filename', 'actual-size', 'full-backing-filename', 'children', 'format-specific'];

/**
 * Field by field, what differs between our info and the oracle's, host-filled fields aside. The
 * extents' filenames are compared: opened with the image's display name, the driver computes them.
 */
export function infoDifferences(mine: NodeInfo, oracle: Record<string, unknown>): string[] {
  const diffs: string[] = [];
  const m = mine as unknown as Record<string, unknown>;
  const keys = new Set([...Object.keys(m), ...Object.keys(oracle)].filter((k) => !HOST_FIELDS.includes(k)));
  for (const k of keys) if (JSON.stringify(m[k]) !== JSON.stringify(oracle[k])) diffs.push(`${k}: ours ${JSON.stringify(m[k])}, qemu ${JSON.stringify(oracle[k])}`);
  const ours = mine['format-specific'] as { type: string; data: Record<string, unknown> };
  const theirs = oracle['format-specific'] as { type: string; data: Record<string, unknown> };
  if (ours.type !== theirs.type) diffs.push(`format-specific.type: ${ours.type} vs ${theirs.type}`);
  for (const k of ['create-type', 'cid', 'parent-cid']) {
    if (ours.data[k] !== theirs.data[k]) diffs.push(`data.${k}: ours ${String(ours.data[k])}, qemu ${String(theirs.data[k])}`);
  }
  const oe = ours.data.extents as Record<string, unknown>[];
  const te = theirs.data.extents as Record<string, unknown>[];
  if (oe.length !== te.length) diffs.push(`extents: ours ${oe.length}, qemu ${te.length}`);
  oe.forEach((x, i) => {
    for (const k of new Set([...Object.keys(x), ...Object.keys(te[i] ?? {})])) {
      if (JSON.stringify(x[k]) !== JSON.stringify(te[i]?.[k])) diffs.push(`extents[${i}].${k}: ours ${JSON.stringify(x[k])}, qemu ${JSON.stringify(te[i]?.[k])}`);
    }
  });
  return diffs;
}
