// qcow2 resize --preallocation=falloc|full: qemu's exact refcount area after the last cluster in
// use, the data run after it, the L2 tables linked first-fit; and --preallocation=metadata from or
// to sizes that are not whole clusters. Files byte-identical to qemu-img 7.2's and 10.0's for
// several cluster sizes, refcount widths and extended L2 entries (and growths of the L1 table);
// every prefix of the writes of a full preallocation leaves an image qemu-img checks with leaks at
// most; what instar still refuses leaves the file as it was.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { PairRunner, onCopy, plannedResize } from './pair.ts';
import { assertSameRun } from '../check/repair-harness.ts';
import { buildImage } from '../snapshot/harness.ts';
import { tiered } from '../helpers/long.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';

const dirs = new PairRunner();
const images: Record<string, Uint8Array> = {};

before(() => {
  images.small = buildImage(dirs.root, 'small.qcow2', ['-f', 'qcow2', '1M'], ['write -P 1 0 600k']);
  images.holes = buildImage(dirs.root, 'holes.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=4096', '1M'], ['write -P 1 0 100k', 'write -P 2 512k 64k', 'discard 0 32k']);
  images.v2 = buildImage(dirs.root, 'v2.qcow2', ['-f', 'qcow2', '-o', 'compat=0.10', '1M']);
  images.tiny64 = buildImage(dirs.root, 'tiny64.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64', '1M'], ['write -P 5 0 8k']);
  images.c512 = buildImage(dirs.root, 'c512.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512', '1M'], ['write -P 5 0 300k']);
  images.extended = buildImage(dirs.root, 'extended.qcow2', ['-f', 'qcow2', '-o', 'extended_l2=on', '1M'], ['write -P 1 0 100k']);
  images.extended16k = buildImage(dirs.root, 'extended16k.qcow2', ['-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=16384', '1025k'], ['write -P 1 0 1025k']);
  images.unaligned = buildImage(dirs.root, 'unaligned.qcow2', ['-f', 'qcow2', '1025k']);
  // Old partial last clusters: allocated and used once (kept), and a compressed one (refused).
  images.partial = buildImage(dirs.root, 'partial.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=4096', '1025k'], ['write -P 3 0 1025k']);
  // Hostile: a refcount for a cluster past the end of the file, where the refcount area would go
  // (qemu's qcow2_alloc_clusters_at finds it in use and qemu aborts on an assertion).
  const stray = Buffer.from(buildImage(dirs.root, 'stray.qcow2', ['-f', 'qcow2', '1M'], ['write -P 1 0 64k']));
  const block = Number(stray.readBigUInt64BE(Number(stray.readBigUInt64BE(48))));
  stray.writeUInt16BE(1, block + 2 * Math.ceil(stray.length / 65536) + 4);
  images.stray = stray;
  images.compressedTail = buildImage(dirs.root, 'compressed-tail.qcow2', ['-f', 'qcow2', '1025k'], ['write -c -P 1 1024k 1k']);
  // Free clusters holding old bytes (a removed bitmap's, say) where the new clusters go: qemu's
  // copy-on-write zeroes the parts of the partial first and last clusters outside the request
  // (found by the generative hunt: instar left the old bytes there).
  const junk = Buffer.alloc(3 * 65536, 0xaa);
  images.junk = Buffer.concat([buildImage(dirs.root, 'junk.qcow2', ['-f', 'qcow2', '1025k'], ['write -P 1 0 64k']), junk]);
  images.junkExtended = Buffer.concat([buildImage(dirs.root, 'junk-ext.qcow2', ['-f', 'qcow2', '-o', 'extended_l2=on', '1025k'], ['write -P 1 0 64k']), junk]);
});
after(() => dirs.remove());

const ALL_CASES: [string, 'falloc' | 'full' | 'metadata', string][] = [
  ['small', 'metadata', '1025k'], ['extended', 'metadata', '3073k'], ['extended16k', 'metadata', '3077k'], ['extended', 'falloc', '5M'],
  ['holes', 'metadata', '9217k'], ['tiny64', 'metadata', '1537k'], ['unaligned', 'metadata', '2M'], ['partial', 'metadata', '3M'],
  ['small', 'full', '3M'], ['small', 'falloc', '64M'], ['small', 'falloc', '1025k'], ['holes', 'falloc', '20M'], ['holes', 'full', '9M'],
  ['v2', 'full', '5M'], ['tiny64', 'falloc', '10M'], ['tiny64', 'full', '3M'], ['c512', 'full', '6M'],
  ['junk', 'metadata', '1100k'], ['junkExtended', 'metadata', '1100k'], ['junk', 'metadata', '1026k'],
];
/** The short tier keeps one case of each kind; the long tier (npm run test:long) runs them all. */
const SHORT = new Set(['junk metadata 1100k', 'junkExtended metadata 1100k', 'junk metadata 1026k', 'extended metadata 3073k', 'unaligned metadata 2M', 'partial metadata 3M', 'small full 3M', 'holes falloc 20M', 'tiny64 full 3M', 'c512 full 6M']);
const CASES = tiered(ALL_CASES, (c) => SHORT.has(c.join(' ')));

for (const version of VERSIONS) {
  test(`${version}: resize --preallocation=falloc|full|metadata writes what qemu-img writes`, async () => {
    for (const [image, mode, size] of CASES) {
      const r = await dirs.run(version, { 'img.qcow2': images[image] }, ['resize', `--preallocation=${mode}`, 'img.qcow2', size]);
      const what = `${version} ${image} ${mode} ${size}`;
      assertSameRun(r, what);
      assert.equal(r.qemu.status, 0, `${what}: ${r.qemu.stderr}`);
      assert.ok(r.instarFiles['img.qcow2'].equals(r.qemuFiles['img.qcow2']), `${what}: instar's file is qemu-img's`);
    }
  });
}

test('resize --preallocation=full through the sandbox; refusals leave the file as it was', async () => {
  const r = await dirs.run('10.0', { 'img.qcow2': images.c512 }, ['resize', '--preallocation=full', 'img.qcow2', '6M'], { sandboxed: true });
  assertSameRun(r, 'sandboxed');
  assert.ok(r.instarFiles['img.qcow2'].equals(r.qemuFiles['img.qcow2']), 'sandboxed: instar\'s file is qemu-img\'s');
  // metadata: qemu copies a partial last cluster that is compressed (and frees its sectors): not implemented.
  const refusals: [string, string, RegExp][] = [
    ['compressedTail', 'metadata', /a partial cluster qemu would copy/],
    ['stray', 'full', /could not place the preallocated clusters/],
  ];
  for (const [image, mode, why] of refusals) {
    const x = await dirs.run('10.0', { 'img.qcow2': images[image] }, ['resize', `--preallocation=${mode}`, 'img.qcow2', '2M'], { skipQemu: true });
    assert.equal(x.instar.status, 1, image);
    assert.match(x.instar.stderr, /^qemu-img: instar cannot resize this qcow2 image \(.*\); nothing was written\n$/, image);
    assert.match(x.instar.stderr, why, image);
    assert.ok(x.instarFiles['img.qcow2'].equals(Buffer.from(images[image])), `${image}: unchanged`);
  }
});

test('crash safety: every prefix of a full preallocation leaves an image qemu-img checks with leaks at most', () => {
  const path = join(dirs.root, 'cut.qcow2');

  const steps = onCopy(images.c512, path, (dev) => plannedResize(dev, 1300 * 1024, 'full'));
  const total = writeCount(steps);
  assert.ok(total >= 5, `${total} writes`);
  for (let k = 0; k <= total; k++) {
    onCopy(images.c512, path, (dev) => applyRepair(dev, steps, { stopAfterWrites: k }));
    const r = runQemu('10.0', ['check', path], { timeoutMs: 20_000 });
    // 0: clean, 3: leaked clusters only; corruptions (2) or an image qemu cannot open (1) fail.
    assert.ok(r.status === 0 || r.status === 3, `after ${k} of ${total} writes: check exits ${r.status}: ${r.stdout}${r.stderr}`);
  }
});
