// Persistent bitmaps in a qemu-made image, damaged field by field: instar must refuse with the
// message both oracles print for the same file, or report the same info.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { damagedImageMismatches, qemu, tempDir } from './helpers.ts';

interface Layout {
  /** Offset of the bitmaps extension's data (nb_bitmaps, reserved, dir size, dir offset). */
  ext: number;
  dir: number;
  dirSize: number;
}

function layout(b: Buffer): Layout {
  for (let at = b.readUInt32BE(100); at < 65536; ) {
    const magic = b.readUInt32BE(at);
    const len = b.readUInt32BE(at + 4);
    if (magic === 0x23852875) {
      return { ext: at + 8, dirSize: Number(b.readBigUInt64BE(at + 16)), dir: Number(b.readBigUInt64BE(at + 24)) };
    }
    if (magic === 0) break;
    at += 8 + Math.ceil(len / 8) * 8;
  }
  throw new Error('no bitmaps extension');
}

type Patch = (b: Buffer, l: Layout) => void;
/** The second directory entry starts after the first (24 bytes + name "b1", padded to 32). */
const SECOND = 32;
const cases: [string, Patch][] = [
  ['reserved flag', (b, l) => b.writeUInt32BE(4, l.dir + 12)],
  ['in-use flag', (b, l) => b.writeUInt32BE(3, l.dir + 12)],
  ['granularity below 512', (b, l) => (b[l.dir + 17] = 8)],
  ['granularity above 2^31', (b, l) => (b[l.dir + 17] = 32)],
  ['unknown type', (b, l) => (b[l.dir + 16] = 2)],
  ['name too long for the directory', (b, l) => b.writeUInt16BE(200, l.dir + 18)],
  ['extra data', (b, l) => b.writeUInt32BE(8, l.dir + 20)],
  ['table offset unaligned', (b, l) => b.writeBigUInt64BE(b.readBigUInt64BE(l.dir) + 8n, l.dir)],
  ['table too small for the disk', (b, l) => { b.writeUInt32BE(1, l.dir + 8); b[l.dir + 17] = 9; }],
  ['table larger than the bitmap needs', (b, l) => b.writeUInt32BE(2, l.dir + 8)],
  ['fewer entries than announced', (b, l) => b.writeUInt32BE(3, l.ext)],
  ['more entries than announced', (b, l) => b.writeUInt32BE(1, l.ext)],
  ['directory size zero', (b, l) => b.writeBigUInt64BE(0n, l.ext + 8)],
  ['directory size too big', (b, l) => b.writeBigUInt64BE(1n << 40n, l.ext + 8)],
  ['directory offset unaligned', (b, l) => b.writeBigUInt64BE(BigInt(l.dir + 8), l.ext + 16)],
  ['reserved field', (b, l) => b.writeUInt32BE(1, l.ext + 4)],
  ['zero bitmaps announced', (b, l) => b.writeUInt32BE(0, l.ext)],
  ['duplicate names', (b, l) => b.write('b1', l.dir + SECOND + 24, 'latin1')],
  ['bad table entry', (b, l) => b.writeBigUInt64BE(0xff00000000000000n, Number(b.readBigUInt64BE(l.dir)))],
  ['table offset past the block layer limit (EIO)', (b, l) => (b[l.dir] = 0x81)],
  ['directory offset past the block layer limit (EIO)', (b, l) => b.writeBigUInt64BE(0x7fffffffc0000000n, l.ext + 16)],
  ['stale extension (autoclear bit clear)', (b) => b.writeBigUInt64BE(0n, 88)],
];

test('bitmap directory damage: same refusal (or same info) as both oracles', (t) => {
  const dir = tempDir(t);
  const pristine = join(dir, 'pristine.qcow2');
  qemu('7.2', ['create', '-q', '-f', 'qcow2', pristine, '64M']);
  qemu('7.2', ['bitmap', '--add', pristine, 'b1']);
  qemu('7.2', ['bitmap', '--add', '-g', '1M', pristine, 'b2']);
  qemu('7.2', ['-c', 'write 0 1M', pristine], 'qemu-io');
  const original = readFileSync(pristine);
  const l = layout(original);
  assert.equal(l.dirSize, 64);
  assert.deepEqual(damagedImageMismatches(dir, original, cases, l), []);
});
