// Sources for the convert --bitmaps tests, built once per file with qemu-img 7.2 and qemu-io into
// <dir>/src: bitmaps written while enabled, disabled ones, every granularity from 512 B to 2 GiB,
// an odd disk size, 512-byte clusters (multi-cluster tables), an in-use bitmap, a version 2
// image, a raw file, an internal snapshot, and hostile variants made by editing the bytes.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemu } from './harness.ts';

/** The bitmap directory entries of an image: [entry offset, table offset]. */
function directory(image: Buffer): [number, number][] {
  for (let at = 112; at + 8 <= image.length && at < 65536;) {
    const magic = image.readUInt32BE(at);
    const len = image.readUInt32BE(at + 4);
    if (magic === 0x23852875) {
      const count = image.readUInt32BE(at + 8);
      let p = Number(image.readBigUInt64BE(at + 8 + 16));
      const out: [number, number][] = [];
      for (let i = 0; i < count; i++) {
        out.push([p, Number(image.readBigUInt64BE(p))]);
        p += Math.ceil((24 + image.readUInt16BE(p + 18)) / 8) * 8;
      }
      return out;
    }
    if (magic === 0) break;
    at += 8 + Math.ceil(len / 8) * 8;
  }
  throw new Error('no bitmaps extension');
}

/** Hostile edits of data.qcow2 (bitmaps b, c (512 B granules), d), by the name of the file they make. */
const HOSTILE: Record<string, (image: Buffer) => void> = {
  // The first bitmap's table far past the end of the file: qemu reads zeros (an empty bitmap).
  'table-past-eof': (b) => { b.writeBigUInt64BE(BigInt((Math.floor(b.length / 65536) + 100) * 65536), directory(b)[0][0]); },
  // A data cluster past the end of the file: its bits read as zeros.
  'data-past-eof': (b) => { b.writeBigUInt64BE(BigInt((Math.floor(b.length / 65536) + 50) * 65536), directory(b)[0][1]); },
  // Bits set past the disk's end in c's data cluster (4 MiB at 512 B: 1 KiB of bits): dropped.
  'bits-past-disk': (b) => {
    const data = Number(b.readBigUInt64BE(directory(b)[1][1]) & 0x00fffffffffffe00n);
    b.fill(0xff, data + 1024, data + 4096);
  },
  // A table entry with the all-ones flag: every bit of the chunk set.
  'all-ones': (b) => { b.writeBigUInt64BE(1n, directory(b)[0][1]); },
  // Granularity bits beyond qemu's maximum: the open fails.
  'granularity-63': (b) => { b[directory(b)[0][0] + 17] = 63; },
  // A table entry with reserved bits: the open fails.
  'reserved-entry': (b) => { b.writeBigUInt64BE(0x202n, directory(b)[0][1]); },
};
export const HOSTILE_NAMES = Object.keys(HOSTILE);

export function buildSources(base: string): void {
  const dir = join(base, 'src');
  mkdirSync(dir);
  const q = (...args: string[]) => qemu(args, dir, '7.2');
  const io = (file: string, ...cmds: string[]) => qemu([...cmds.flatMap((c) => ['-c', c]), file], dir, '7.2', 'qemu-io');
  q('create', '-q', '-f', 'qcow2', 'data.qcow2', '4M');
  q('bitmap', '--add', 'data.qcow2', 'b');
  q('bitmap', '--add', '-g', '512', 'data.qcow2', 'c');
  io('data.qcow2', 'write -P 1 0 64k', 'write 1M 4k', 'write 3M 512');
  q('bitmap', '--add', 'data.qcow2', 'd');
  q('bitmap', '--disable', 'data.qcow2', 'c');
  // Every granularity qemu allows (512 B .. 2 GiB), some disabled, over an odd 5000 KiB disk.
  q('create', '-q', '-f', 'qcow2', 'many.qcow2', '5000k');
  for (let i = 0; i <= 22; i++) q('bitmap', '--add', '-g', String(512 * 2 ** i), 'many.qcow2', `bm${i}`);
  io('many.qcow2', 'write 0 1k', 'write 1000k 300k', 'write 4990k 10k');
  q('bitmap', '--disable', 'many.qcow2', 'bm1');
  q('bitmap', '--disable', 'many.qcow2', 'bm22');
  // 512-byte clusters: a 512 B-granule bitmap of 64 MiB spans 32 table clusters.
  q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'small.qcow2', '64M');
  q('bitmap', '--add', '-g', '512', 'small.qcow2', 'fine');
  q('bitmap', '--add', 'small.qcow2', 'coarse');
  io('small.qcow2', 'write 0 1M', 'write 20M 4M', 'write 63M 1M');
  // An internal snapshot (-l) taken before the bitmap and the disk grew.
  q('create', '-q', '-f', 'qcow2', 'snap.qcow2', '2M');
  io('snap.qcow2', 'write -P 7 0 1M');
  q('snapshot', '-c', 's1', 'snap.qcow2');
  q('bitmap', '--add', 'snap.qcow2', 'b');
  io('snap.qcow2', 'write -P 9 512k 1M');
  q('resize', '-q', 'snap.qcow2', '3M');
  // Every cluster written (so -B needs no zero clusters) and an empty backing file for -B.
  q('create', '-q', '-f', 'qcow2', 'full.qcow2', '2M');
  q('bitmap', '--add', 'full.qcow2', 'f');
  io('full.qcow2', 'write -P 1 0 2M');
  q('bitmap', '--add', '-g', '4k', 'full.qcow2', 'g');
  io('full.qcow2', 'write -P 2 8k 4k');
  q('create', '-q', '-f', 'qcow2', 'blank.qcow2', '2M');
  q('create', '-q', '-f', 'qcow2', 'plain.qcow2', '1M');
  q('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '1M');
  q('create', '-q', '-f', 'raw', 'disk.raw', '1M');
  // b is marked in use (as a crash leaves it): inconsistent.
  q('create', '-q', '-f', 'qcow2', 'inuse.qcow2', '1M');
  q('bitmap', '--add', 'inuse.qcow2', 'b');
  q('bitmap', '--add', 'inuse.qcow2', 'c');
  const inuse = readFileSync(join(dir, 'inuse.qcow2'));
  inuse[directory(inuse)[0][0] + 15] |= 1;
  writeFileSync(join(dir, 'inuse.qcow2'), inuse);
  // Names: the longest qemu allows, non-ASCII (in use), punctuation; 4 KiB clusters.
  q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', 'names.qcow2', '1M');
  q('bitmap', '--add', 'names.qcow2', 'n'.repeat(1023));
  q('bitmap', '--add', 'names.qcow2', 'héllo wörld ✓');
  q('bitmap', '--add', '-g', '1M', 'names.qcow2', 'a,b=c');
  io('names.qcow2', 'write 100k 3k');
  const names = readFileSync(join(dir, 'names.qcow2'));
  names[directory(names)[1][0] + 15] |= 1;
  writeFileSync(join(dir, 'names.qcow2'), names);
  // 1200 table entries of a 300 GiB disk at 512 B granules, all naming one cluster of set bits:
  // 75 MiB of bitmap data to load, past instar's bound (qemu would copy it).
  q('create', '-q', '-f', 'qcow2', 'huge.qcow2', '300G');
  q('bitmap', '--add', '-g', '512', 'huge.qcow2', 'h');
  const huge = readFileSync(join(dir, 'huge.qcow2'));
  const [[, table]] = directory(huge);
  const data = Math.ceil(huge.length / 65536) * 65536;
  const grown = Buffer.concat([huge, Buffer.alloc(data - huge.length), Buffer.alloc(65536, 0xff)]);
  for (let i = 0; i < 1200; i++) grown.writeBigUInt64BE(BigInt(data), table + 8 * i);
  writeFileSync(join(dir, 'huge.qcow2'), grown);
  for (const [name, edit] of Object.entries(HOSTILE)) {
    const image = readFileSync(join(dir, 'data.qcow2'));
    edit(image);
    writeFileSync(join(dir, `${name}.qcow2`), image);
  }
}
