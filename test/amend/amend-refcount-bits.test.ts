// amend -o refcount_bits=N on qcow2 against qemu-img 7.2 and 10.0: each side amends its own copy
// of the same image; output (with -p progress), exit status and every file must be identical.
// Then crash safety: instar's plan cut after every write leaves an image qemu-img check accepts
// (leaked clusters at most), and the whole plan ends in qemu's file.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS } from '../helpers/oracles.ts';
import { LONG } from '../helpers/long.ts';
import { assertSameOutcome } from '../rebase/harness.ts';
import { TwinDirs } from '../check/fast-dirs.ts';
import { buildImage, sweepCrashes } from './harness.ts';

const dirs = new TwinDirs();
const scratch = mkdtempSync(join(tmpdir(), 'instar-amend-rc-'));
const images: Record<string, Buffer> = {};

const build = (name: string, opts: string, size: string, actions: string[] = []) => buildImage(scratch, name, opts, size, actions);

before(() => {
  // 64-bit refcounts in 512-byte clusters: one block counts 64 clusters, a table cluster 64
  // blocks (2 MiB); written up to its end, the old table must grow while new blocks are placed.
  images.growth = build('growth.qcow2', 'cluster_size=512,refcount_bits=64', '8M', ['write -P 3 0 1980k']);
  images.c512many = build('c512many.qcow2', 'cluster_size=512,refcount_bits=2', '8M', ['write -P 1 0 700k', 'write -c -P 2 2M 64k']);
  images.snapshots = build('snap.qcow2', 'cluster_size=4096', '4M', ['write -P 1 0 64k', 'write -c -P 2 1M 64k', 'snap:one', 'write -P 3 0 8k']);
  // 64 KiB clusters (qemu walks 32768 refcounts per block, slowly: one case only).
  images.c64k = build('c64k.qcow2', '', '4M', ['write -P 5 0 192k']);
  images.v2 = build('v2.qcow2', 'compat=0.10', '4M', ['write -P 6 0 64k']);
  images.rc8 = build('rc8.qcow2', 'refcount_bits=8,cluster_size=4096', '4M', ['write -P 7 0 64k']);
  images.lazy = build('lazy.qcow2', 'lazy_refcounts=on,refcount_bits=32', '4M', ['write -P 8 0 64k']);
  images.base = build('base.qcow2', '', '4M', ['write -P 9 0 1M']);
  images.overlay = build('overlay.qcow2', 'backing_file=base.qcow2,backing_fmt=qcow2,refcount_bits=16,cluster_size=4096', '4M', ['write -P 10 512k 64k']);
});

after(() => {
  dirs.remove();
  rmSync(scratch, { recursive: true, force: true });
});

const CASES: [string, string[]][] = [
  ['growth', ['-o', 'refcount_bits=8']],
  ['growth', ['-o', 'refcount_bits=1']],
  ['c512many', ['-p', '-o', 'refcount_bits=32']],
  ['c512many', ['-o', 'refcount_bits=4']],
  ['snapshots', ['-o', 'refcount_bits=8']],
  // A snapshot's refcount of 2 does not fit in one bit, a cluster of 32 compressed ones in two:
  // qemu's error, after its allocations were freed again.
  ['snapshots', ['-p', '-o', 'refcount_bits=1']],
  ['snapshots', ['-o', 'refcount_bits=2']],
  ['snapshots', ['-o', 'refcount_bits=64']],
  // Upgrade, then the width: progress over two operations.
  ['v2', ['-p', '-o', 'compat=1.1,refcount_bits=8']],
  ['c64k', ['-p', '-o', 'refcount_bits=64']],
  // The width back to 16, then the downgrade.
  ['rc8', ['-p', '-o', 'compat=0.10,refcount_bits=16']],
  ['lazy', ['-o', 'refcount_bits=4,lazy_refcounts=off']],
  ['overlay', ['-o', 'refcount_bits=2']],
];

test('amend -o refcount_bits writes what qemu-img writes, byte for byte', () => {
  // The two releases agree on all of these (measured): the short tier runs each case under one
  // of them, 7.2 and 10.0 in turn; the long tier runs all under both.
  CASES.forEach(([image, args], i) => {
    for (const version of LONG ? VERSIONS : [VERSIONS[i % 2]]) {
      const files = { 'img.qcow2': images[image], 'base.qcow2': images.base };
      const r = dirs.run(version, files, ['amend', ...args, 'img.qcow2']);
      assertSameOutcome(r, Object.keys(files), `${args.join(' ')} (${image}, ${version})`);
    }
  });
});

test('amend -o refcount_bits: every prefix of its writes leaves an image qemu-img checks with leaks at most', () => {
  const cases: [string, Record<string, string>][] = [
    ['growth', { refcount_bits: '8' }], ['snapshots', { refcount_bits: '8' }], ['c512many', { refcount_bits: '32' }],
    ['rc8', { compat: '0.10', refcount_bits: '16' }],
  ];
  // Long sweeps: every 4th prefix and the first and last three in the short tier (their writes repeat one kind: refcount blocks or L2 tables), all in the long one.
  for (const [image, options] of cases) sweepCrashes(scratch, image, images[image], options, { every: LONG ? 1 : 4 });
});

test('amend -o refcount_bits through the real sandbox, and a refcount table naming a block twice refused', () => {
  const files = { 'img.qcow2': images.c512many };
  assertSameOutcome(dirs.run('10.0', files, ['amend', '-p', '-o', 'refcount_bits=8', 'img.qcow2'], { sandboxed: true }), ['img.qcow2'], 'sandboxed');
  const hostile = Buffer.from(images.c512many);
  const table = Number(hostile.readBigUInt64BE(48));
  hostile.writeBigUInt64BE(hostile.readBigUInt64BE(table), table + 8);
  const r = dirs.run('10.0', { 'img.qcow2': hostile }, ['amend', '-o', 'refcount_bits=8', 'img.qcow2']);
  assert.equal(r.instar.status, 1);
  assert.match(r.instar.stderr, /^qemu-img: instar refuses this qcow2 image: the refcount block at \d+ is named twice in the refcount table; nothing was written\n$/);
  assert.ok(readFileSync(join(r.instarDir, 'img.qcow2')).equals(hostile), 'unchanged');
});
