// qcow (v1) through the built CLI against both oracles: info, map, backing chains, hostile headers.
import { after, before, test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { ImageDir, assertSameOutput } from '../../differential/harness.ts';
import { cliCases, cliErrorCases, settle } from './cli-cases.ts';
import { writeSource } from './legacy-helpers.ts';

const images = new ImageDir('qcow-cli');

/** A 48-byte qcow header; fields big-endian. */
function header(version: number, clusterBits: number, size: bigint): Buffer {
  const h = Buffer.alloc(4096);
  h.writeUInt32BE(0x514649fb, 0);
  h.writeUInt32BE(version, 4);
  h.writeBigUInt64BE(size, 24);
  h[32] = clusterBits;
  h[33] = 9;
  h.writeBigUInt64BE(48n, 40);
  return h;
}

before(() => {
  writeSource(images.path('src.raw'), 2 * 1024 * 1024 + 512, 61);
  images.img('convert', '-f', 'raw', '-O', 'qcow', 'src.raw', 'base.qcow');
  images.img('create', '-f', 'qcow', '-b', 'base.qcow', '-F', 'qcow', 'top.qcow');
  images.io('-c', 'write -P 0x5a 1000k 70k', '-c', 'write -c -P 0x22 1536k 512', 'top.qcow');
  // Over a raw base whose last hole runs to its end (found by the generative hunt).
  images.sparse('hole-end.raw', 4 * 1024 * 1024);
  images.io('-f', 'raw', '-c', 'write -P 0x24 1M 512k', 'hole-end.raw');
  images.img('create', '-f', 'qcow', '-b', 'hole-end.raw', '-F', 'raw', 'over-hole-end.qcow');
  images.img('create', '-f', 'qcow', 'compressed.qcow', '1M');
  images.io('-c', 'write -c -P 0x33 0 4k', '-c', 'write -c -P 0x34 64k 4k', 'compressed.qcow');
  writeFileSync(images.path('v2.qcow'), header(2, 12, 1n << 20n));
  writeFileSync(images.path('cluster.qcow'), header(1, 20, 1n << 20n));
  writeFileSync(images.path('too-large.qcow'), header(1, 9, 1n << 62n));
  settle(images.dir);
});

after(() => images.remove());

test('compare -s walks a qcow image cluster by cluster, as qemu\'s block status does', async () => {
  // The raw base's last hole has the EOF flag; the qcow's first hole cluster there does not. (A
  // qcow header has no backing format: the raw base is probed, qemu's raw fallback: quirks.)
  const quirks = { instarArgs: ['--unsafe-quirks'] };
  await assertSameOutput(images.dir, ['compare', '-s', '-f', 'raw', '-F', 'qcow', 'hole-end.raw', 'over-hole-end.qcow'], quirks);
  await assertSameOutput(images.dir, ['compare', '-s', '-F', 'raw', 'over-hole-end.qcow', 'hole-end.raw'], quirks);
  await assertSameOutput(images.dir, ['compare', '-s', 'base.qcow', 'base.qcow']);
});

cliCases(() => images.dir, 'qcow', ['base.qcow', 'top.qcow', 'compressed.qcow'], { chains: ['top.qcow'], sandboxed: ['top.qcow'] });
cliErrorCases(() => images.dir, 'qcow', ['cluster.qcow', 'too-large.qcow']);
// qemu prints a hint line after this error; the sandboxed host folds guest text to one line
// (src/host/sandbox/guest-messages.ts), so only the in-process run matches qemu here.
cliErrorCases(() => images.dir, 'qcow', ['v2.qcow'], false);
