// Images for the bitmap tests, built once per test file with qemu-img 7.2 and qemu-io: bitmaps
// with data (written while they were enabled), several cluster sizes, an in-use bitmap, a version
// 2 image, a raw file and -b sources.
import assert from 'node:assert/strict';
import type { Workspace } from './harness.ts';
import { runQemu } from '../helpers/oracles.ts';

export type Fixtures = Record<string, Uint8Array>;

/** The directory offset from the bitmaps extension (the first extension of these images). */
export function directoryOffset(image: Uint8Array): number {
  const b = Buffer.from(image);
  for (let at = 112; at + 8 <= b.length && at < 4096;) {
    const magic = b.readUInt32BE(at);
    const len = b.readUInt32BE(at + 4);
    if (magic === 0x23852875) return Number(b.readBigUInt64BE(at + 8 + 16));
    if (magic === 0) break;
    at += 8 + Math.ceil(len / 8) * 8;
  }
  throw new Error('no bitmaps extension');
}

/** Runs qemu-img (or qemu-io) 10.0 to build an image; a failure fails the setup. */
export function build10(args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): void {
  const r = runQemu('10.0', args, {}, tool);
  assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
}

/** The image with its bitmaps extension's autoclear bit cleared: a stale extension. */
export function withStaleExtension(image: Uint8Array): Buffer {
  const b = Buffer.from(image);
  b.writeBigUInt64BE(b.readBigUInt64BE(88) & ~1n, 88);
  return b;
}

export function buildFixtures(ws: Workspace): Fixtures {
  const q = (...args: string[]) => ws.qemu(args);
  q('create', '-q', '-f', 'qcow2', 'plain.qcow2', '1M');
  // b and c take writes; d is added after them (clean); c is disabled at the end.
  q('create', '-q', '-f', 'qcow2', 'data.qcow2', '4M');
  q('bitmap', '--add', 'data.qcow2', 'b');
  q('bitmap', '--add', '-g', '512', 'data.qcow2', 'c');
  ws.io('data.qcow2', ['write 0 64k', 'write 1M 4k', 'write 3M 512']);
  q('bitmap', '--add', 'data.qcow2', 'd');
  q('bitmap', '--disable', 'data.qcow2', 'c');
  // 512-byte clusters: a bitmap of 512-byte granules spans several table clusters.
  q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=8', 'small.qcow2', '16M');
  q('bitmap', '--add', '-g', '512', 'small.qcow2', 'b');
  q('bitmap', '--add', 'small.qcow2', 'c');
  ws.io('small.qcow2', ['write 0 64k', 'write 5M 1M', 'write 15M 512']);
  q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', 'big.qcow2', '16M');
  q('bitmap', '--add', '-g', '1k', 'big.qcow2', 'b');
  ws.io('big.qcow2', ['write 4M 8k']);
  q('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '1M');
  q('create', '-q', '-f', 'raw', 'disk.raw', '1M');
  // b is marked in use (as a crash leaves it): inconsistent, only removable.
  q('create', '-q', '-f', 'qcow2', 'inuse.qcow2', '1M');
  q('bitmap', '--add', 'inuse.qcow2', 'b');
  q('bitmap', '--add', 'inuse.qcow2', 'c');
  const inuse = ws.read('inuse.qcow2');
  inuse[directoryOffset(inuse) + 15] |= 1;
  // Sources for --merge -b: same size with data, another size.
  q('create', '-q', '-f', 'qcow2', 'src.qcow2', '4M');
  q('bitmap', '--add', '-g', '1k', 'src.qcow2', 's');
  ws.io('src.qcow2', ['write 2M 8k', 'write 4032k 64k']);
  // A source whose backing file is not there: qemu-img opens a source without its backing file.
  q('create', '-q', '-f', 'qcow2', 'gone.qcow2', '4M');
  q('create', '-q', '-f', 'qcow2', '-b', 'gone.qcow2', '-F', 'qcow2', 'srcover.qcow2');
  q('bitmap', '--add', 'srcover.qcow2', 's');
  ws.io('srcover.qcow2', ['write 1M 4k']);
  q('create', '-q', '-f', 'qcow2', 'other.qcow2', '8M');
  q('bitmap', '--add', 'other.qcow2', 's');
  // 64-bit refcounts in 512-byte clusters: a refcount block covers 64 clusters, so storing the
  // bitmaps allocates new refcount blocks.
  q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64', 'edge.qcow2', '8M');
  q('bitmap', '--add', '-g', '512', 'edge.qcow2', 'b');
  ws.io('edge.qcow2', ['write 0 256k', 'write 7M 4k']);
  // A backing file (opened with the image) and an autoclear bit qemu does not know (dropped).
  q('create', '-q', '-f', 'qcow2', 'base.qcow2', '1M');
  q('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'overlay.qcow2');
  q('bitmap', '--add', 'overlay.qcow2', 'b');
  const overlay = ws.read('overlay.qcow2');
  overlay[95] |= 4;
  // The bitmaps extension without its autoclear bit: stale, dropped with a warning.
  q('create', '-q', '-f', 'qcow2', 'stale.qcow2', '1M');
  q('bitmap', '--add', 'stale.qcow2', 'b');
  const stale = ws.read('stale.qcow2');
  stale[95] &= ~1;
  const files: Fixtures = {};
  files['overlay.qcow2'] = overlay;
  files['stale.qcow2'] = stale;
  // A backing file that is missing, and one whose named format is not its own: qemu-img bitmap
  // opens the image without its backing chain (the hunt found instar opening it and failing).
  q('create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', 'orphan.qcow2', '1M');
  q('bitmap', '--add', 'orphan.qcow2', 's');
  q('create', '-q', '-f', 'qcow2', '-u', '-b', 'base.qcow2', '-F', 'vmdk', 'mistyped.qcow2', '1M');
  for (const name of ['plain', 'data', 'small', 'big', 'v2', 'src', 'srcover', 'other', 'edge', 'base', 'orphan', 'mistyped']) files[`${name}.qcow2`] = ws.read(`${name}.qcow2`);
  files['inuse.qcow2'] = inuse;
  files['disk.raw'] = ws.read('disk.raw');
  return files;
}
