// bochs: images assembled byte by byte, read by instar and by both qemu-img oracles: info, map,
// convert -O raw byte for byte; hostile headers refused with qemu's wording in bounded time.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { assertSameOutput, ImageDir } from '../../differential/harness.ts';
import { runInstar, runQemu, VERSIONS } from '../../helpers/oracles.ts';
import { cliCases, cliErrorCases } from '../qcow/cli-cases.ts';
import { buildBochs } from './build.ts';

const images = new ImageDir('bochs');
const all = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

const good: Record<string, Buffer> = {
  // Two stored extents, out of catalog order, a partial bitmap, unallocated extents, odd size.
  'v2.bochs': buildBochs({
    diskSize: 5 * 4096 + 1024 + 100,
    extentSize: 4096,
    catalog: [1, undefined, 0, undefined, undefined, undefined],
    extents: [
      { bits: [0, 2, 5, 7], fill: (s) => 0x10 + s },
      { bits: all(8), fill: (s) => 0x40 + s },
    ],
  }),
  'v1.bochs': buildBochs({
    version: 1,
    diskSize: 64 * 1024,
    extentSize: 8192,
    bitmapSize: 2,
    catalog: [undefined, 0, undefined, undefined, undefined, undefined, 1, undefined],
    extents: [
      { bits: all(16), fill: (s) => 0x80 + s },
      { bits: [1, 3, 15], fill: (s) => 0xc0 + s },
    ],
  }),
  // 32 MiB in 64 KiB extents, stored in reverse order, every other extent with a sparse bitmap.
  'large.bochs': buildBochs({
    diskSize: 32 * 1024 * 1024,
    extentSize: 65536,
    bitmapSize: 16,
    catalog: Array.from({ length: 512 }, (_, i) => 511 - i),
    extents: Array.from({ length: 512 }, (_, i) => ({ bits: i % 2 ? all(128).filter((s) => s % 3) : all(128), fill: (s: number) => (i + s) & 0xff })),
  }),
  // A header size that puts the catalog past the first sector; an extent whose data is past EOF.
  'far.bochs': (() => {
    const b = buildBochs({ diskSize: 16384, extentSize: 4096, headerSize: 1024, catalog: [], catalogSize: 4, extents: [] });
    const c = Buffer.alloc(1024 + 16, 0xff);
    b.copy(c, 0, 0, 512);
    c.writeUInt32LE(0, 1024);
    c.writeUInt32LE(5, 1028);
    return c;
  })(),
};

const hostile: Record<string, Buffer> = {
  'magic.bochs': buildBochs({ magic: 'Bochs Virtual HD Imagf', diskSize: 4096, extentSize: 4096, catalog: [0], extents: [] }),
  'subtype.bochs': buildBochs({ subtype: 'Undoable', diskSize: 4096, extentSize: 4096, catalog: [0], extents: [] }),
  'truncated.bochs': buildBochs({ diskSize: 4096, extentSize: 4096, catalog: [0], extents: [] }).subarray(0, 70),
  'catalog-huge.bochs': buildBochs({ diskSize: 4096, extentSize: 4096, catalog: [], catalogSize: 0x100001, extents: [] }),
  'catalog-max-eof.bochs': buildBochs({ diskSize: 4096, extentSize: 4096, catalog: [], catalogSize: 0x100000, extents: [] }),
  'extent-small.bochs': buildBochs({ diskSize: 4096, extentSize: 256, catalog: [0], extents: [] }),
  'extent-odd.bochs': buildBochs({ diskSize: 4096, extentSize: 4097, catalog: [0], extents: [] }),
  'extent-large.bochs': buildBochs({ diskSize: 4096, extentSize: 0x1000000, catalog: [0], extents: [] }),
  'catalog-small.bochs': buildBochs({ diskSize: 2n ** 40n, extentSize: 4096, catalog: [0, 1], extents: [] }),
  'disk-u64max.bochs': buildBochs({ diskSize: 2n ** 64n - 1n, extentSize: 0x800000, catalog: [], catalogSize: 0x100000, extents: [] }),
  // Extent index near 2^32 with the largest bitmap: the computed offsets overflow 64 bits.
  'offset-wrap.bochs': buildBochs({ diskSize: 4096, extentSize: 4096, bitmapSize: 0xffffffff, catalog: [0xfffffffe], extents: [] }),
};

before(() => {
  for (const [name, bytes] of Object.entries({ ...good, ...hostile })) writeFileSync(images.path(name), bytes);
});
after(() => images.remove());

cliCases(() => images.dir, 'bochs', Object.keys(good), { sandboxed: ['v2.bochs'] });
cliErrorCases(() => images.dir, 'bochs', ['magic.bochs', 'subtype.bochs', 'truncated.bochs', 'catalog-huge.bochs', 'extent-small.bochs', 'extent-odd.bochs', 'extent-large.bochs', 'catalog-small.bochs', 'disk-u64max.bochs']);

/** convert -O raw by instar equals each oracle's output, byte for byte (and the same errors). */
function convertMatches(file: string, sandboxed = false): void {
  for (const version of VERSIONS) {
    const want = runQemu(version, ['convert', '-f', 'bochs', '-O', 'raw', file, `q${version}-${file}.raw`], { cwd: images.dir, timeoutMs: 30_000 });
    const got = runInstar(['convert', '-f', 'bochs', '-O', 'raw', file, `i${version}-${file}.raw`, '--qemu-version', version, ...(sandboxed ? [] : ['--sandbox=none'])], {
      cwd: images.dir,
      timeoutMs: 30_000,
    });
    assert.equal(got.stderr, want.stderr, `${version} stderr`);
    assert.equal(got.status, want.status, `${version} status`);
    if (want.status === 0) {
      assert.ok(readFileSync(images.path(`i${version}-${file}.raw`)).equals(readFileSync(images.path(`q${version}-${file}.raw`))), `${version} data`);
    }
  }
}

for (const file of Object.keys(good)) test(`bochs convert -O raw ${file}`, () => convertMatches(file));
test('bochs convert -O raw v2.bochs (sandboxed)', () => convertMatches('v2.bochs', true));
test('bochs convert of a catalog offset that overflows 64 bits', () => convertMatches('offset-wrap.bochs'));

test('bochs detection: probe scores pick bochs without -f', async () => {
  await assertSameOutput(images.dir, ['info', 'v1.bochs']);
  await assertSameOutput(images.dir, ['info', 'subtype.bochs'], { instarArgs: ['--unsafe-quirks'] });
});

test('bochs: a 1M-entry catalog past EOF opens fast', () => {
  const t = Date.now();
  const r = runInstar(['info', '-f', 'bochs', 'catalog-max-eof.bochs'], { cwd: images.dir, timeoutMs: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(Date.now() - t < 10_000);
});
