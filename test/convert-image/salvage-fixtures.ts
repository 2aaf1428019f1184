// Source images whose reads fail in qemu-img, built at test time with qemu-img and qemu-io and
// then damaged in place: compressed qcow2 clusters and streamOptimized VMDK grains that do not
// inflate (a read error: "error while reading at byte N"), and qcow2 L1/L2 entries qemu finds
// misaligned (a block-status error, with qcow2's "Image is corrupt" notice).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemu } from './harness.ts';

function damage(path: string, edit: (file: Buffer) => void): void {
  const file = readFileSync(path);
  edit(file);
  writeFileSync(path, file);
}

/** The first L2 table of a qcow2 file (L1 entry 0), and its cluster bits. */
function firstL2(file: Buffer): { l1: number; l2: number; clusterBits: number } {
  const clusterBits = file.readUInt32BE(20);
  const l1 = Number(file.readBigUInt64BE(40));
  const l2 = Number(file.readBigUInt64BE(l1) & 0x00ff_ffff_ffff_fe00n);
  return { l1, l2, clusterBits };
}

/** Overwrites the start of the compressed clusters `indexes` (of the first L2 table) with bytes zlib refuses. */
function breakCompressed(path: string, indexes: number[]): void {
  damage(path, (file) => {
    const { l2, clusterBits } = firstL2(file);
    const offsetMask = (1n << BigInt(62 - (clusterBits - 8))) - 1n;
    for (const i of indexes) {
      const entry = file.readBigUInt64BE(l2 + 8 * i);
      if (!(entry & (1n << 62n))) throw new Error(`cluster ${i} of ${path} is not compressed`);
      file.fill(0xff, Number(entry & offsetMask), Number(entry & offsetMask) + 8);
    }
  });
}

/** Overwrites the deflate stream of the streamOptimized grain that holds sector `lba`. */
function breakGrain(path: string, lba: number): void {
  damage(path, (file) => {
    // A grain marker: lba (u64 LE), compressed size (u32 LE), then the zlib stream, 512-aligned.
    for (let at = 512; at + 16 <= file.length; at += 512) {
      if (file.readBigUInt64LE(at) === BigInt(lba) && file.readUInt32LE(at + 8) > 0 && file[at + 12] === 0x78) {
        file.fill(0xff, at + 14, at + 22);
        return;
      }
    }
    throw new Error(`no grain for sector ${lba} in ${path}`);
  });
}

/**
 * In `dir`: comp.qcow2 and grain.vmdk (6 MiB; data at [0, 1M) and [3M, 5M); broken compressed
 * clusters 3, 50 and 60, a broken grain at 64 KiB), entry.qcow2 (2 MiB; L2 entry 1 misaligned),
 * table.qcow2 (L1 entry 0 misaligned); over6.qcow2 and over2.qcow2, empty, to be -B backing files;
 * into.qcow2 and into.vdi (6 MiB, empty), to be -n targets.
 */
export function buildSalvageSources(dir: string): void {
  const at = (name: string) => join(dir, name);
  qemu(['create', '-q', '-f', 'qcow2', 'plain.qcow2', '6M'], dir);
  qemu(['-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 3M 2M', 'plain.qcow2'], dir, '10.0', 'qemu-io');
  qemu(['convert', '-c', '-O', 'qcow2', 'plain.qcow2', 'comp.qcow2'], dir);
  breakCompressed(at('comp.qcow2'), [3, 50, 60]);
  qemu(['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'plain.qcow2', 'grain.vmdk'], dir);
  breakGrain(at('grain.vmdk'), 65536 / 512);

  // Backing files for -B targets.
  qemu(['create', '-q', '-f', 'qcow2', 'over6.qcow2', '6M'], dir);
  qemu(['create', '-q', '-f', 'qcow2', 'over2.qcow2', '2M'], dir);
  // Existing targets for -n.
  qemu(['create', '-q', '-f', 'qcow2', 'into.qcow2', '6M'], dir);
  qemu(['create', '-q', '-f', 'vdi', 'into.vdi', '6M'], dir);
  qemu(['create', '-q', '-f', 'qcow2', 'small.qcow2', '2M'], dir);
  qemu(['-c', 'write -P 0x33 0 192k', '-c', 'write -P 0x44 1M 64k', 'small.qcow2'], dir, '10.0', 'qemu-io');
  for (const [name, edit] of [
    ['entry.qcow2', (f: Buffer, l1: number, l2: number) => f.writeBigUInt64BE(f.readBigUInt64BE(l2 + 8) + 0x200n, l2 + 8)],
    ['table.qcow2', (f: Buffer, l1: number) => f.writeBigUInt64BE(f.readBigUInt64BE(l1) + 0x200n, l1)],
  ] as const) {
    writeFileSync(at(name), readFileSync(at('small.qcow2')));
    damage(at(name), (f) => {
      const { l1, l2 } = firstL2(f);
      edit(f, l1, l2);
    });
  }
}
