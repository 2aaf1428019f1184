// A bochs image read in pieces that are not whole sectors: qemu's bochs driver has no sub-sector
// I/O and its block layer widens such a request, while instar's driver threw a RangeError (an
// internal error, status 4). compare asks for them when the other image is a raw file whose length
// is not a multiple of 512 (its extents end there). Found by the other-formats hunt (campaign
// 9200000 case 108: compare -f raw -F bochs top.bochs top.bochs, a 396856-byte file).
import { after, before, test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { assertSameOutput, ImageDir } from '../../differential/harness.ts';
import { buildBochs } from './build.ts';

const images = new ImageDir('bochs-unaligned');
const all = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

before(() => {
  // Extents 0 and 2 stored; 100 bytes after the last one: the file is not whole sectors.
  const bochs = buildBochs({
    diskSize: 4 * 4096,
    extentSize: 4096,
    catalog: [0, undefined, 1, undefined],
    extents: [{ bits: all(8), fill: (s) => 0x21 + s }, { bits: [1, 2, 6], fill: (s) => 0x61 + s }],
  });
  writeFileSync(images.path('odd.bochs'), Buffer.concat([bochs, Buffer.alloc(100, 0x7e)]));
  // The disk as raw, cut 100 bytes into extent 1 (zeros there): its data extent ends unaligned,
  // inside a region the bochs image reads as zeros.
  const disk = Buffer.alloc(4 * 4096);
  for (let s = 0; s < 8; s++) disk.fill(0x21 + s, s * 512, (s + 1) * 512);
  for (const s of [1, 2, 6]) disk.fill(0x61 + s, 8192 + s * 512, 8192 + (s + 1) * 512);
  writeFileSync(images.path('cut.raw'), disk.subarray(0, 4096 + 100));
  writeFileSync(images.path('whole.raw'), disk);
});
after(() => images.remove());

test('compare of a bochs image against itself read as a raw file of odd length', async () => {
  await assertSameOutput(images.dir, ['compare', '-f', 'raw', '-F', 'bochs', 'odd.bochs', 'odd.bochs']);
  await assertSameOutput(images.dir, ['compare', '-f', 'bochs', '-F', 'raw', 'odd.bochs', 'odd.bochs'], { sandboxed: true });
});

test('compare of a bochs image against a raw cut inside a zero region (an unaligned read there), and against the whole disk', async () => {
  for (const raw of ['cut.raw', 'whole.raw']) {
    await assertSameOutput(images.dir, ['compare', '-f', 'raw', '-F', 'bochs', raw, 'odd.bochs']);
    await assertSameOutput(images.dir, ['compare', '-f', 'bochs', '-F', 'raw', 'odd.bochs', raw]);
  }
});
