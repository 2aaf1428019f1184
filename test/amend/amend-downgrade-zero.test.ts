// amend -o compat=0.10 of images with zero clusters, against qemu-img 7.2 and 10.0: qemu expands
// them before the header goes to version 2 (unallocated without a backing file, new zeroed
// clusters over one, zeroed data where they had some), in the active table and in snapshots'.
// Files, -p output and exit status identical; every prefix of instar's writes leaves an image
// qemu-img check accepts (leaks at most) that reads as before. What instar still refuses (a new
// cluster after a truncate in the same amend: qemu's allocation hint is not known) leaves the
// file unchanged.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, runInstar } from '../helpers/oracles.ts';
import { TwinDirs, assertSameOutcome } from '../rebase/harness.ts';
import { LONG } from '../helpers/long.ts';
import { buildImage, sweepCrashes } from './harness.ts';

const dirs = new TwinDirs();
const scratch = mkdtempSync(join(tmpdir(), 'instar-amend-zero-'));
const images: Record<string, Buffer> = {};

const build = (name: string, opts: string, size: string, actions: string[] = []) => buildImage(scratch, name, opts, size, actions);

const BACKED = 'backing_file=base.qcow2,backing_fmt=qcow2';

before(() => {
  images.base = build('base.qcow2', '', '8M', ['write -P 9 0 8M']);
  // Zero clusters with data (write -z over written clusters) and without (-u, and never written).
  images.plain = build('plain.qcow2', '', '4M', ['write -P 1 0 128k', 'write -z 0 64k', 'write -z -u 64k 64k', 'write -z 1M 64k']);
  images.snap = build('snap.qcow2', 'cluster_size=4096', '4M', ['write -P 1 0 128k', 'write -z 0 64k', 'snap:one', 'write -P 2 0 4k', 'write -z 1M 8k']);
  images.backed = build('backed.qcow2', `${BACKED},cluster_size=4096`, '4M', ['write -P 1 0 128k', 'write -z 0 64k', 'write -z -u 64k 64k', 'write -z 1M 8k']);
  // Zero clusters in an L2 table three tables share: each new cluster is counted three times.
  images.shared = build('shared.qcow2', `${BACKED},cluster_size=512`, '4M', ['write -z 0 300k', 'snap:one', 'snap:two', 'write -P 3 0 1k']);
  // 8-bit refcounts: back to 16 bits first, the new zero-filled clusters counted in the new width.
  images.rc8 = build('rc8.qcow2', `${BACKED},cluster_size=512,refcount_bits=8`, '4M', ['write -z 0 8k', 'snap:one', 'write -P 3 0 1k']);
  // Over a backing file shorter than the image: growing it only rewrites the header's size, so
  // the expansion after the truncate allocates from qemu's hint as before.
  images.smallBase = build('small-base.qcow2', '', '2M', ['write -P 9 0 2M']);
  images.overSmall = build('over-small.qcow2', 'backing_file=small-base.qcow2,backing_fmt=qcow2', '4M', ['write -z 0 128k', 'write -P 1 1M 64k']);
  // The same, small enough for the crash sweep (a check per write).
  images.sharedSmall = build('shared-small.qcow2', `${BACKED},cluster_size=512`, '4M', ['write -z 0 4k', 'write -z 96k 4k', 'snap:one', 'snap:two', 'write -P 3 0 1k']);
});

after(() => {
  dirs.remove();
  rmSync(scratch, { recursive: true, force: true });
});

const CASES: [string, string][] = [
  ['plain', 'compat=0.10'],
  ['snap', 'compat=0.10'],
  ['backed', 'compat=0.10'],
  ['shared', 'compat=0.10'],
  // The truncate first (the zero clusters past 1M cut off), then the expansion.
  ['plain', 'compat=0.10,size=1M'],
  ['rc8', 'compat=0.10,refcount_bits=16'],
  ['overSmall', 'compat=0.10,size=8M'],
];

test('amend -o compat=0.10 expands zero clusters as qemu-img does', () => {
  // Both releases expand through the same code (qemu's qcow2_downgrade): the short tier runs each
  // case under one of them, 7.2 and 10.0 in turn; the long tier runs all under both.
  for (const [i, [image, options]] of CASES.entries()) {
    for (const version of LONG ? VERSIONS : [VERSIONS[i % 2]]) {
      const files = { 'img.qcow2': images[image], 'base.qcow2': images.base, 'small-base.qcow2': images.smallBase };
      const r = dirs.run(version, files, ['amend', '-p', '-o', options, 'img.qcow2']);
      assertSameOutcome(r, Object.keys(files), `${options} (${image}, ${version})`);
    }
  }
});

test('amend -o compat=0.10 with zero clusters: every prefix of its writes leaves an image qemu-img checks with leaks at most, reading as before', () => {
  for (const image of ['backed', 'sharedSmall', 'plain']) {
    // Long sweeps: every 4th prefix and the first and last three in the short tier (their writes repeat one kind: refcount blocks or L2 tables), all in the long one.
    sweepCrashes(scratch, image, images[image], { compat: '0.10' }, { beside: { 'base.qcow2': images.base }, sameDisk: true, minWrites: 2, every: LONG ? 1 : 4 });
  }
  sweepCrashes(scratch, 'rc8', images.rc8, { compat: '0.10', refcount_bits: '16' }, { beside: { 'base.qcow2': images.base }, sameDisk: true, every: LONG ? 1 : 4 });
});

test('a zero cluster that needs a new cluster after a truncate in the same amend is refused, nothing written', () => {
  const dir = join(scratch, 'refuse');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'base.qcow2'), images.base);
  writeFileSync(join(dir, 'img.qcow2'), images.backed);
  const r = runInstar(['amend', '-o', 'compat=0.10,size=8M', 'img.qcow2', '--sandbox=none'], { cwd: dir });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^qemu-img: instar cannot amend this qcow2 image: its zero clusters need new clusters after a size change; nothing was written\n$/);
  assert.ok(readFileSync(join(dir, 'img.qcow2')).equals(images.backed), 'unchanged');
});

test('a zero cluster whose data lies far past the end of the file is refused, nothing written', () => {
  const hostile = Buffer.from(images.plain);
  const l1 = Number(hostile.readBigUInt64BE(40));
  const l2 = Number(hostile.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  hostile.writeBigUInt64BE((1n << 50n) | 1n, l2);
  const dir = join(scratch, 'far');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'img.qcow2'), hostile);
  const r = runInstar(['amend', '-o', 'compat=0.10', 'img.qcow2', '--sandbox=none'], { cwd: dir });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^qemu-img: instar refuses this qcow2 image: the amend would place clusters \d+ bytes past the end of the file; nothing was written\n$/);
  assert.ok(readFileSync(join(dir, 'img.qcow2')).equals(hostile), 'unchanged');
});
