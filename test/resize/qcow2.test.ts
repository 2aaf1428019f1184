// qcow2 resize against qemu-img 7.2 and 10.0: growing (with and without a new L1 table) and
// shrinking (L2 entries discarded, L2 tables dropped and created, the file cut), a new L1 table
// that needs new refcount blocks, over refcount widths, v2 and v3, extended L2 entries, cluster
// sizes, internal snapshots; the resized file must
// be qemu's byte for byte. What instar refuses writes nothing. Every prefix of a resize's writes
// leaves an image qemu-img 10.0 opens and checks with leaks at most.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qcow2Resize } from '../../src/formats/qcow2/resize.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { assertSameResize } from './harness.ts';
import { ResizeDirs } from '../check/fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import { LONG } from '../helpers/long.ts';

const dirs = new ResizeDirs();
const images: Record<string, Uint8Array> = {};

/** A qcow2 image made by qemu-img create -o `options`, then written and discarded by qemu-io. */
function made(name: string, options: string, size: string, ...commands: string[]): Uint8Array {
  const path = dirs.path(name);
  const created = runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', options, path, size]);
  assert.equal(created.status, 0, created.stderr);
  if (commands.length === 0) return new Uint8Array(readFileSync(path));
  const written = runQemu('10.0', [...commands.flatMap((c) => ['-c', c]), path], {}, 'qemu-io');
  assert.equal(written.status, 0, written.stderr + written.stdout);
  return new Uint8Array(readFileSync(path));
}

/** Data in the first and third L2 tables' spans (the second has none), a hole freed in the middle. */
const WRITES = ['write -P 5 0 300k', 'write -P 6 9M 64k', 'write -P 7 1200M 64k', 'discard 64k 64k'];
const VARIANTS = ['refcount_bits=16', 'refcount_bits=1', 'refcount_bits=64', 'compat=0.10', 'extended_l2=on', 'cluster_size=16k,extended_l2=on', 'lazy_refcounts=on'];

before(() => {
  for (const [i, options] of VARIANTS.entries()) images[options] = made(`v${i}.qcow2`, options, '1300M', ...WRITES);
  images.snapshot = made('s.qcow2', 'compat=1.1', '1M', 'write -P 5 0 256k');
  assert.equal(runQemu('10.0', ['snapshot', '-c', 's1', dirs.path('s.qcow2')]).status, 0);
  images.snapshot = new Uint8Array(readFileSync(dirs.path('s.qcow2')));
  images.v2snapshot = made('s2.qcow2', 'compat=0.10', '1M');
  assert.equal(runQemu('10.0', ['snapshot', '-c', 's1', dirs.path('s2.qcow2')]).status, 0);
  images.v2snapshot = new Uint8Array(readFileSync(dirs.path('s2.qcow2')));
  images.fragmented = made('f.qcow2', 'compat=1.1', '10M', 'write -P 5 0 256k', 'discard 64k 128k');
  images.small = made('small.qcow2', 'compat=1.1', '1M');
  images.small4k = made('small4k.qcow2', 'cluster_size=4k', '1M', 'write -P 5 0 100k');
  // Compressed clusters past the new end (several share a host cluster; one under a snapshot):
  // qemu frees the sectors they occupy (found by the generative hunt: instar refused).
  made('c.qcow2', 'compat=1.1', '4M', 'write -c -P 1 0 64k', 'write -c -P 2 64k 64k', 'write -c -P 3 1M 64k', 'write -c -P 4 2M 64k', 'write -P 6 3136k 64k', 'write -c 3264k 64k');
  assert.equal(runQemu('10.0', ['snapshot', '-c', 's1', dirs.path('c.qcow2')]).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -c -P 7 3M 64k', dirs.path('c.qcow2')], {}, 'qemu-io').status, 0);
  images.compressedSnapshot = new Uint8Array(readFileSync(dirs.path('c.qcow2')));
  images.compressed = made('c2.qcow2', 'cluster_size=4k', '4M', 'write -c -P 1 0 64k', 'write -c -P 3 1M 64k', 'write -c -P 4 2M 64k', 'write -P 6 3136k 64k', 'write -c 3264k 64k');
  // Refcount blocks of 64 clusters (32 KiB): a bigger L1 table needs new ones. A hole of one
  // cluster takes the first new block outside its own range.
  images.tiny = made('tiny.qcow2', 'cluster_size=512,refcount_bits=64', '1M', 'write -P 5 0 8k', 'discard 1k 512');
  images.tiny16 = made('tiny16.qcow2', 'cluster_size=512,refcount_bits=16', '1M', 'write -P 5 0 8k');
  const secret = ['--object', 'secret,id=sec0,data=abc'];
  const encrypted = dirs.path('e.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', encrypted, '1M']).status, 0);
  images.encrypted = new Uint8Array(readFileSync(encrypted));
  images.base = made('base.qcow2', 'compat=1.1', '4M', 'write -P 9 0 4M');
  const overlay = dirs.path('o.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', overlay, '4M']).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 5 1M 64k', overlay], {}, 'qemu-io').status, 0);
  images.overlay = new Uint8Array(readFileSync(overlay));
  // An external data file (instar refuses to resize it): qemu's own size check still comes first.
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=df.data', 'df.qcow2', '1M'], { cwd: dirs.root }).status, 0);
  images.dataFile = new Uint8Array(readFileSync(dirs.path('df.qcow2')));
  images['df.data'] = new Uint8Array(readFileSync(dirs.path('df.data')));
  // Old sizes inside a cluster over the longer backing file: qemu writes zeros from the old end
  // to the cluster's end, into the cluster (allocated) or a new one holding the backing file's
  // bytes before the old end (unallocated) or zeros (a zero cluster). The hunt found instar
  // refusing them all.
  for (const [name, writes] of [['overlayUnallocated', []], ['overlayAllocated', ['write -P 2 960k 8k']], ['overlayZero', ['write -z 960k 40k']]] as const) {
    const path = dirs.path(`${name}.qcow2`);
    assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', path, '1000k']).status, 0);
    assert.equal(runQemu('10.0', [...['write -P 1 0 64k', ...writes].flatMap((c) => ['-c', c]), path], {}, 'qemu-io').status, 0);
    images[name] = new Uint8Array(readFileSync(path));
  }
  const shortV2 = dirs.path('o2.qcow2');
  images.base2 = made('base2.qcow2', 'compat=0.10', '4M');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'base.qcow2', '-F', 'qcow2', shortV2, '1M']).status, 0);
  images.shortV2 = new Uint8Array(readFileSync(shortV2));
  for (const [name, options] of [['short', 'compat=1.1'], ['shortExtended', 'extended_l2=on']]) {
    const path = dirs.path(`${name}.qcow2`);
    assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', options, '-b', 'base.qcow2', '-F', 'qcow2', path, '1M']).status, 0);
    assert.equal(runQemu('10.0', ['-c', 'write -P 5 0 64k', path], {}, 'qemu-io').status, 0);
    images[name] = new Uint8Array(readFileSync(path));
  }
});
after(() => dirs.remove());

/** Every size for the default image; a grow with a new L1 table and a shrink dropping one for the rest. */
const SIZES = [['q.qcow2', '4G'], ['--shrink', 'q.qcow2', '600M'], ['--shrink', 'q.qcow2', '5M'], ['q.qcow2', '+512']];

for (const options of VARIANTS) {
  test(`qcow2 resize (${options}): qemu's bytes`, () => {
    for (const v of VERSIONS) {
      for (const args of options === VARIANTS[0] ? SIZES : SIZES.slice(0, 2)) {
        // The guest only carries each result across: the short tier sends a case through it under one release (in-process under the other), the long tier under both.
        const r = dirs.run(v, { 'q.qcow2': images[options] }, args, { sandboxed: (LONG || v === '7.2') && options === 'refcount_bits=16' && args[1] === '4G' });
        assertSameResize(r, `${options}: qemu-img ${v} resize ${args.join(' ')}`);
      }
    }
  });
}

test('qcow2 resize: errors and images qemu resizes in one way only', () => {
  const cases: [string, string[]][] = [
    ['small', ['q.qcow2', '1000']],
    ['small', ['--shrink', 'q.qcow2', '--', '-1']],
    ['small', ['q.qcow2', '--', '+0']],
    ['small', ['q.qcow2', '5P']],
    ['small', ['--preallocation=metadata', '--shrink', 'q.qcow2', '512k']],
    ['small', ['--image-opts', 'file.filename=q.qcow2,foo=bar', '2M']],
    ['fragmented', ['q.qcow2', '2G']],
    ['fragmented', ['--shrink', 'q.qcow2', '64k']],
    ['snapshot', ['q.qcow2', '2G']],
    ['snapshot', ['--shrink', 'q.qcow2', '512k']],
    ['v2snapshot', ['q.qcow2', '2G']],
    ['v2snapshot', ['--shrink', 'q.qcow2', '512k']],
    ['encrypted', ['--object', 'secret,id=sec0,data=abc', '--image-opts', 'driver=qcow2,file.filename=q.qcow2,encrypt.key-secret=sec0', '2G']],
    ['encrypted', ['--object', 'secret,id=sec0,data=abc', '--image-opts', 'driver=qcow2,file.filename=q.qcow2,encrypt.key-secret=sec0', '--shrink', '512k']],
    ['encrypted', ['q.qcow2', '2G']],
    ['fragmented', ['--preallocation=metadata', 'q.qcow2', '20M']],
    ['small4k', ['--preallocation=metadata', 'q.qcow2', '5M']],
    ['overlay', ['q.qcow2', '2G']],
    ['overlay', ['--shrink', 'q.qcow2', '1M']],
    ['shortV2', ['q.qcow2', '2M']],
    ['short', ['q.qcow2', '2G']],
    ['shortExtended', ['q.qcow2', '+100k']],
    ['compressed', ['--shrink', 'q.qcow2', '1M']],
    ['compressed', ['--shrink', 'q.qcow2', '--', '-3900k']],
    ['compressedSnapshot', ['--shrink', 'q.qcow2', '2M']],
    ['overlayUnallocated', ['q.qcow2', '2M']],
    ['overlayAllocated', ['q.qcow2', '1010k']],
    ['overlayZero', ['-f', 'qcow2', 'q.qcow2', '+64k']],
    ['dataFile', ['q.qcow2', '+4608272']],
  ];
  for (const v of VERSIONS) {
    for (const [image, args] of cases) {
      const files: Record<string, Uint8Array> = { 'q.qcow2': images[image] };
      if (image.startsWith('short') || image.startsWith('overlay')) files['base.qcow2'] = image === 'shortV2' ? images.base2 : images.base;
      if (image === 'dataFile') files['df.data'] = images['df.data'];
      const r = dirs.run(v, files, args, { sandboxed: (LONG || v === (image === 'overlay' ? '10.0' : '7.2')) && (image === 'fragmented' || image === 'overlay') && args[1] === '2G' });
      assertSameResize(r, `${image}: qemu-img ${v} resize ${args.join(' ')}`);
    }
  }
});

test('qcow2 resize: a new L1 table that needs new refcount blocks (or a bigger refcount table) gets them where qemu puts them', () => {
  const cases: [string, string][] = [['tiny', '128M'], ['tiny', '1G'], ['tiny16', '600M'], ['tiny', '10G']];
  for (const v of VERSIONS) {
    for (const [image, size] of cases) {
      const r = dirs.run(v, { 'q.qcow2': images[image] }, ['q.qcow2', size]);
      assertSameResize(r, `${image}: qemu-img ${v} resize q.qcow2 ${size}`);
      assert.equal(r.instar.status, 0, `${image} to ${size}: ${r.instar.stderr}`);
    }
  }
});

test('qcow2 resizes instar refuses: its words, nothing written', () => {
  // An autoclear bit qemu does not know (it clears it at open). Bitmaps: test/bitmap/mutating-commands.test.ts.
  const unknownAutoclear = Buffer.from(images.small);
  unknownAutoclear.writeBigUInt64BE(0x20n, 88);
  const cases: [string, Uint8Array, string[], RegExp][] = [
    ['unknown autoclear', unknownAutoclear, ['q.qcow2', '2M'], /unknown autoclear bits/],
    // The new end inside the old last cluster: qemu copies the backing file's bytes past it.
    ['overlayUnallocated', images.overlayUnallocated, ['q.qcow2', '1010k'], /new size ends inside its old last cluster/],
  ];
  for (const [image, bytes, args, why] of cases) {
    const r = dirs.run('10.0', { 'q.qcow2': bytes, 'base.qcow2': images.base }, args);
    assert.equal(r.instar.status, 1);
    assert.equal(r.instar.stdout, '');
    assert.match(r.instar.stderr, /^qemu-img: instar cannot resize this qcow2 image \(.*\); nothing was written\n$/);
    assert.match(r.instar.stderr, why);
    assert.ok(readFileSync(join(r.idir, 'q.qcow2')).equals(Buffer.from(bytes)), `${image}: the file is unchanged`);
    assert.equal(r.qemu.status, 0, `${image}: qemu resizes it`);
  }
});

/** Applies the first `writes` steps of instar's resize plan to a copy of `bytes`. */
function cutResize(bytes: Uint8Array, path: string, newSize: number, writes: number, preallocation: 'off' | 'metadata' = 'off', backingSize?: number): number {
  writeFileSync(path, bytes);
  const fd = openSync(path, 'r+');
  try {
    const dev = new FdDevice(fd, true);
    const image = qcow2Driver.open(dev, { writable: true, readsData: true });
    const plan = qcow2Resize.plan(image, dev, { newSize, preallocation, backingSize });
    assert.ok('steps' in plan, 'error' in plan ? plan.error : '');
    applyRepair(dev, plan.steps, { stopAfterWrites: writes });
    return writeCount(plan.steps);
  } finally {
    closeSync(fd);
  }
}

test('qcow2 resize: every prefix of its writes leaves an image qemu-img checks with leaks at most', () => {
  const path = dirs.path('cut.qcow2');
  const cases: [string, number, ('off' | 'metadata')?][] = [
    ['fragmented', 5 * 2 ** 30], ['refcount_bits=16', 600 * 2 ** 20], ['refcount_bits=16', 100 * 1024], ['small4k', 5 * 2 ** 20, 'metadata'], ['short', 2 ** 30], ['tiny', 2 ** 30],
  ];
  for (const [image, newSize, preallocation] of cases) {
    // The overlay's backing file (4 MiB, longer than it): the grown area is marked zero.
    const backingSize = image === 'short' ? 4 * 2 ** 20 : undefined;
    let total = Infinity;
    for (let n = 0; n <= total; n++) {
      total = cutResize(images[image], path, newSize, n, preallocation, backingSize);
      const label = `${image} to ${newSize}, after ${n} of ${total} writes`;
      const check = runQemu('10.0', ['check', path]);
      // 0: clean, 3: leaks only; anything else (2: corruptions, 1: it would not open) fails.
      assert.ok(check.status === 0 || check.status === 3, `${label}: qemu-img check exits ${check.status}: ${check.stdout}${check.stderr}`);
    }
    assert.ok(total >= 3, `${image}: the resize has several writes`);
    const done = readFileSync(path);
    // Beside the base image, which the overlay names.
    const qemuCopy = dirs.path('cut-qemu.qcow2');
    writeFileSync(qemuCopy, images[image]);
    const how = preallocation ? [`--preallocation=${preallocation}`] : newSize < 2 ** 30 ? ['--shrink'] : [];
    const args = ['resize', ...how, qemuCopy, String(newSize)];
    assert.equal(runQemu('10.0', args).status, 0);
    assert.ok(done.equals(readFileSync(qemuCopy)), `${image} to ${newSize}: all writes give qemu's bytes`);
  }
});
