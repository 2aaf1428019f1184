// amend -o on qcow2 images with persistent bitmaps (enabled, disabled, in use) or a stale bitmaps
// extension: qemu-img amend's writable open marks the bitmaps in use, the amend runs, and the close
// stores them anew over what it left (truncated to a new size; after compat=0.10 the v2 header keeps
// the extension without its autoclear bit), also when qemu fails after the open. instar against
// 7.2 and 10.0 (each case on one of them in the short tier, on both in the long one): stdout,
// stderr, exit status, the file byte for byte, and `info` and `check` of the result. Every prefix
// of the writes of an amend leaves an image qemu-img checks with leaks at most.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { OracleVersion } from '../helpers/oracles.ts';
import { versionMatrix } from './harness.ts';
import { LONG } from '../helpers/long.ts';
import { assertSameRun } from '../check/repair-harness.ts';
import { build10, directoryOffset, withStaleExtension } from './fixtures.ts';
import { sweepCrashes } from '../amend/harness.ts';
import { RepairDirs } from '../check/fast-dirs.ts';

const dirs = new RepairDirs();
const images: Record<string, Buffer> = {};

before(() => {
  const p = (name: string) => join(dirs.root, name);
  // b0 enabled, b1 disabled with 128 KiB granules; a zero cluster (expanded by a downgrade).
  build10(['create', '-q', '-f', 'qcow2', p('two.qcow2'), '4M']);
  build10(['-c', 'write -P 1 0 64k', '-c', 'write -z 2M 64k', p('two.qcow2')], 'qemu-io');
  build10(['bitmap', '--add', p('two.qcow2'), 'b0']);
  build10(['bitmap', '--add', '-g', '128k', p('two.qcow2'), 'b1']);
  build10(['bitmap', '--disable', p('two.qcow2'), 'b1']);
  build10(['-c', 'write -P 2 1M 64k', p('two.qcow2')], 'qemu-io');
  images.two = readFileSync(p('two.qcow2'));
  images.stale = withStaleExtension(images.two);
  images.inuse = Buffer.from(images.two);
  images.inuse[directoryOffset(images.inuse) + 15] |= 1;
  // 512-byte clusters: bitmap tables over several clusters, refcount blocks that fill up.
  build10(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', p('small.qcow2'), '1M']);
  build10(['bitmap', '--add', '-g', '512', p('small.qcow2'), 'fine']);
  build10(['bitmap', '--add', p('small.qcow2'), 'coarse']);
  build10(['-c', 'write -P 3 0 16k', '-c', 'write -P 4 700k 4k', p('small.qcow2')], 'qemu-io');
  images.small = readFileSync(p('small.qcow2'));
  // A snapshot taken before a write the enabled bitmap records.
  build10(['snapshot', '-c', 's1', p('two.qcow2')]);
  build10(['-c', 'write -P 7 0 64k', p('two.qcow2')], 'qemu-io');
  images.snap = readFileSync(p('two.qcow2'));
});
after(() => dirs.remove());

/** `args` (IMG standing for the image) on both sides, on a copy of `image` (or of `bytes`); the same output and file. */
function same(version: OracleVersion, image: string, args: string[], opts: { sandboxed?: boolean; bytes?: Buffer } = {}): void {
  const name = 'x.qcow2';
  const r = dirs.run(version, name, opts.bytes ?? images[image], args.map((a) => (a === 'IMG' ? name : a)), { viaEnv: true, sandboxed: opts.sandboxed });
  const label = `qemu-img ${version} ${args.join(' ')} on ${image}`;
  assertSameRun(r, label);
  assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
}

test('amend with bitmaps: every option, failures after the open, as qemu writes them', () => {
  const every = ['compat=0.10', 'compat=1.1', 'refcount_bits=8', 'refcount_bits=64', 'refcount_bits=1', 'lazy_refcounts=on',
    'size=8M', 'size=1M', 'size=1T', 'size=8M,refcount_bits=64', 'compat=0.10,size=8M', 'compat=0.10,size=2M',
    // qemu's failures after its open: the open's and the close's writes stay.
    'refcount_bits=8,compat=0.10', 'lazy_refcounts=on,compat=0.10', 'compat=9', 'size=4194305', 'backing_file=x', 'foo=bar', 'cluster_size=4k'];
  const some = ['compat=0.10', 'refcount_bits=8', 'size=8M', 'size=1M', 'compat=9'];
  const cases: [string, string][] = [];
  for (const o of every) cases.push(['two', o]);
  // The other images: the changes that allocate and free (every option in the long tier).
  for (const image of ['small', 'stale', 'inuse', 'snap']) for (const o of LONG ? every : some) cases.push([image, o]);
  for (const [v, [image, o]] of versionMatrix(cases)) same(v, image, ['amend', '-o', o, 'IMG']);
  same('10.0', 'two', ['amend', '-p', '-o', 'refcount_bits=4,compat=0.10', 'IMG']);
  same('7.2', 'small', ['amend', '-p', '-o', 'refcount_bits=16,size=3M', 'IMG']);
  same('7.2', 'two', ['amend', '-o', 'help', 'IMG']);
  // Through the sandboxed guest once (a two-line error crosses the protocol).
  same('10.0', 'inuse', ['amend', '-o', 'size=8M', 'IMG'], { sandboxed: true });
});

test('after amend with bitmaps: info and check of the result read as qemu-img reads them', () => {
  // The downgrade leaves a v2 image whose extension is stale (its clusters leaked); a truncate
  // leaves bitmaps of the new size.
  for (const [v, image, o] of [['7.2', 'two', 'compat=0.10'], ['10.0', 'small', 'compat=0.10'], ['10.0', 'two', 'size=1M'], ['7.2', 'snap', 'refcount_bits=8']] as const) {
    const r = dirs.run(v, 'x.qcow2', images[image], ['amend', '-o', o, 'x.qcow2'], { viaEnv: true });
    assert.ok(r.instarFile.equals(r.qemuFile), `${v} ${o} on ${image}: the files differ`);
    for (const args of [['info', 'IMG'], ['info', '--output=json', 'IMG'], ['check', 'IMG'], ['check', '--output=json', 'IMG']]) {
      same(v, image, args, { bytes: r.instarFile });
    }
  }
});

test('amend with bitmaps: every prefix of its writes leaves an image qemu-img opens and checks', () => {
  for (const [label, image, options] of [['downgrade', 'two', { compat: '0.10' }], ['width', 'small', { refcount_bits: '8' }],
    ['grow', 'two', { size: '8388608' }], ['shrink', 'small', { size: '262144' }]] as const) {
    // Long sweeps: every 4th prefix and the first and last three in the short tier (their writes repeat one kind: refcount blocks or L2 tables), all in the long one.
    sweepCrashes(dirs.root, label, images[image], options, { sameDisk: label !== 'shrink' && label !== 'grow', every: LONG ? 1 : 4 });
  }
});
