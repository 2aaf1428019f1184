// amend on qcow2 against qemu-img 7.2 and 10.0: each side amends its own copy of the same files;
// stdout (help, -p progress), stderr, exit status and every file must be identical byte for byte.
// What instar refuses (qemu would rewrite more than the header) must leave the image untouched.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, runInstar, runQemu } from '../helpers/oracles.ts';
import { assertSameOutcome } from '../rebase/harness.ts';
import { TwinDirs } from '../check/fast-dirs.ts';
import { created, extension, featureTable, staleBitmaps, withExtensions } from '../rebase/images.ts';
import { LONG } from '../helpers/long.ts';

const dirs = new TwinDirs();
const scratch = mkdtempSync(join(tmpdir(), 'instar-amend-'));
const images: Record<string, Buffer> = {};

before(() => {
  images.v2 = created(scratch, 'v2.qcow2', 'compat=0.10');
  images.v2small = created(scratch, 'v2s.qcow2', 'compat=0.10,cluster_size=4096');
  images.v3 = created(scratch, 'v3.qcow2', '');
  images.lazy = created(scratch, 'lazy.qcow2', 'lazy_refcounts=on');
  images.dataFile = created(scratch, 'df.qcow2', 'data_file=data.raw');
  images.dataFileRaw = created(scratch, 'dfr.qcow2', 'data_file=data.raw,data_file_raw=on');
  images.v2backed = created(scratch, 'v2b.qcow2', 'compat=0.10,backing_file=old.qcow2,backing_fmt=qcow2', '1M', ['-u']);
  images.unknownExt = withExtensions(images.v3, [
    extension(0x12345678, Buffer.from('hello')), featureTable(images.v3), extension(0x9abcdef0, Buffer.alloc(8, 0xee)),
  ], Buffer.alloc(8, 0xab));
  images.autoclear = Buffer.from(images.lazy);
  images.autoclear[95] |= 0x40; // an unknown autoclear bit: qemu's writable open clears it
  // A version 2 image with an internal snapshot (qemu writes version 3's extra data even in v2).
  const snap = join(scratch, 'snap.qcow2');
  writeFileSync(snap, images.v2);
  assert.equal(runQemu('10.0', ['snapshot', '-c', 's1', snap]).status, 0);
  images.v2snap = readFileSync(snap);
  images.c512 = created(scratch, 'c512.qcow2', 'cluster_size=512');
  images.staleBitmaps = staleBitmaps(scratch, 'stale.qcow2');
  images.zstd = created(scratch, 'zstd.qcow2', 'compression_type=zstd,lazy_refcounts=on');
  images.rc8 = created(scratch, 'rc8.qcow2', 'refcount_bits=8');
  images.extl2 = created(scratch, 'extl2.qcow2', 'extended_l2=on');
  // Snapshots whose disk size differs from the image's now (qemu refuses to downgrade those).
  const grown = join(scratch, 'grown.qcow2');
  writeFileSync(grown, images.v3);
  assert.equal(runQemu('10.0', ['snapshot', '-c', 's1', grown]).status, 0);
  assert.equal(runQemu('10.0', ['resize', '-q', grown, '2M']).status, 0);
  images.grownSnap = readFileSync(grown);
  const compressed = join(scratch, 'compressed.qcow2');
  writeFileSync(compressed, images.zstd);
  assert.equal(runQemu('10.0', ['-c', 'write -c -P 7 0 64k', compressed], {}, 'qemu-io').status, 0);
  images.zstdCompressed = readFileSync(compressed);
  const zeros = join(scratch, 'zeros.qcow2');
  writeFileSync(zeros, images.v3);
  assert.equal(runQemu('10.0', ['-c', 'write -z 0 64k', zeros], {}, 'qemu-io').status, 0);
  images.zeroCluster = readFileSync(zeros);
});

after(() => {
  dirs.remove();
  rmSync(scratch, { recursive: true, force: true });
});

type Version = (typeof VERSIONS)[number];

/**
 * Long tier: both oracles for every other case, 10.0 for the rest. The two releases agree on all
 * of these (measured), so the short tier runs each case under one of them, 7.2 and 10.0 in turn:
 * every case still compared, each release still compared on half of them.
 */
const versionsFor = (i: number): readonly Version[] => (LONG ? (i % 2 === 0 ? VERSIONS : ['10.0']) : [VERSIONS[i % 2]]);

/** Runs `amend <args> img.qcow2` on both sides; compares output, status, image and data file. */
function same(version: Version, image: string, args: string[], label: string, sandboxed = false): void {
  const files = { 'img.qcow2': images[image], 'data.raw': Buffer.alloc(0), 'old.qcow2': images.v3 };
  const r = dirs.run(version, files, ['amend', ...args, 'img.qcow2'], { sandboxed });
  assertSameOutcome(r, Object.keys(files), `${label} (${image}, ${version})`);
}

test('amend changes what qemu-img changes, byte for byte', () => {
  const cases: [string, string][] = [
    ['v2', 'compat=1.1'], ['v2small', 'compat=v3'], ['v2', 'compat=1.1,lazy_refcounts=on'], ['v2backed', 'compat=1.1'],
    ['v2snap', 'compat=1.1'], ['v2', 'compat=0.10'], ['v2', 'refcount_bits=16,size=1M'],
    ['v3', 'lazy_refcounts=on'], ['lazy', 'lazy_refcounts=off'], ['lazy', 'lazy_refcounts=on'],
    ['dataFileRaw', 'data_file_raw=off'], ['dataFileRaw', 'data_file_raw=on'], ['dataFile', 'data_file=other.raw'],
    ['dataFile', 'data_file='], ['unknownExt', 'lazy_refcounts=on'], ['autoclear', 'lazy_refcounts=off'],
    ['v2backed', 'backing_file=old.qcow2,backing_fmt=qcow2'], ['v3', 'compat=1.1,compat=v3'],
    ['staleBitmaps', 'lazy_refcounts=on'], ['v3', 'compat=0.10'], ['lazy', 'compat=v2'], ['zstd', 'compat=0.10'], ['unknownExt', 'compat=0.10'], ['autoclear', 'compat=0.10'], ['zeroCluster', 'compat=0.10'],
  ];
  cases.forEach(([image, options], i) => {
    for (const version of versionsFor(i)) same(version, image, ['-o', options], options);
  });
});

test('amend fails as qemu-img fails, writing what qemu writes before it fails', () => {
  const cases: [string, string[]][] = [
    ['v3', ['-o', 'cluster_size=4k']], ['v3', ['-o', 'cluster_size=abc']], ['v3', ['-o', 'bogus=1']], ['v3', ['-o', 'nocow=on']],
    ['v3', ['-o', 'compat=bogus']], ['v3', ['-o', 'data_file=x,compat=bogus']], ['v3', ['-o', 'refcount_bits=3']],
    ['v3', ['-o', 'refcount_bits=abc']], ['v3', ['-o', 'lazy_refcounts=maybe']], ['v3', ['-o', 'size=abc']],
    ['v3', ['-o', 'encrypt.state=active']], ['v3', ['-o', 'backing_file=x']], ['v3', ['-o', 'backing_file=,backing_fmt=']],
    ['v2', ['-o', 'lazy_refcounts=on']], ['v2', ['-o', 'refcount_bits=8']], ['dataFile', ['-o', 'data_file_raw=on']],
    ['v3', ['-o', 'data_file=x']], ['autoclear', ['-o', 'compat=bogus']], ['autoclear', ['-o', 'backing_file=b']],
    ['v2', ['-o', 'compat=1.1,backing_file=b']], ['v3', ['-o', ',']], ['v2backed', ['-o', 'compat=1.1', '-U']], ['v3', ['-o', '']], ['v3', ['-t', 'bogus', '-o', 'compat=1.1']],
    ['v3', ['-f', 'vmdk', '-o', 'compat=1.1']], ['v3', ['-o', 'encrypt.state=x,refcount_bits=3']], ['v3', ['-o', 'compat=x,encrypt.state=x']],
    ['rc8', ['-o', 'compat=0.10']], ['extl2', ['-o', 'compat=0.10']], ['dataFile', ['-o', 'compat=0.10']], ['grownSnap', ['-o', 'compat=0.10']],
    ['zstdCompressed', ['-o', 'compat=0.10']], ['staleBitmaps', ['-o', 'bogus=1']], ['staleBitmaps', ['-o', 'help']], ['v3', ['-o', 'compat=0.10,lazy_refcounts=on']], ['v3', ['-o', 'compat=0.10,refcount_bits=8']],
  ];
  // The short tier takes every other case (each still under one release or both); the long tier all.
  cases.forEach(([image, args], i) => {
    if (!LONG && i % 2 === 1) return;
    for (const version of versionsFor(LONG ? i : i / 2)) same(version, image, args, args.join(' '));
  });
});

test('amend -o help, -p progress and the command line checks print what qemu-img prints', () => {
  // The short tier runs each command line under one release, 7.2 and 10.0 in turn (they print
  // the same for all but a missing -o, which keeps both); the long tier runs all under both.
  let k = 0;
  const releases = (both = false): readonly Version[] => (LONG || both ? VERSIONS : [VERSIONS[k++ % 2]]);
  for (const args of [['-o', 'help'], ['-o', 'compat=1.1,help'], ['-p', '-o', 'help'], ['-p', '-o', 'compat=1.1'], ['-p', '-o', 'lazy_refcounts=on'],
    ['-p', '-o', 'compat=bogus'], ['-p', '-o', 'bogus'], ['-q', '-p', '-o', 'compat=1.1']]) {
    for (const version of releases()) same(version, 'v2', args, args.join(' '));
  }
  // A downgrade reports one step per L1 entry (32 of them here).
  for (const version of releases()) same(version, 'c512', ['-p', '-o', 'compat=0.10'], 'downgrade progress');
  for (const args of [['-f', 'qcow2', '-o', 'help'], ['-f', 'luks', '-o', 'help'], ['-f', 'raw', '-o', 'help'], ['-f', 'bogus', '-o', '?'],
    ['-o', 'compat=1.1'], ['-o', 'compat=1.1', 'a', 'b'], ['img.qcow2'], ['-p', '-o', 'compat=1.1', 'missing.qcow2']]) {
    for (const version of releases(args.length === 1)) {
      const r = dirs.run(version, {}, ['amend', ...args], {});
      assertSameOutcome(r, [], `${args.join(' ')} (${version})`);
    }
  }
});

test('amend on a format without amendment prints qemu-img\'s message', () => {
  const path = join(scratch, 'x.vmdk');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'vmdk', path, '1M']).status, 0);
  // Both messages are the same under both releases: the short tier runs each under one of them.
  for (const [i, version] of VERSIONS.entries()) {
    if (LONG || i === 0) {
      const r = dirs.run(version, { 'x.vmdk': readFileSync(path) }, ['amend', '-o', 'compat=1.1', 'x.vmdk']);
      assertSameOutcome(r, ['x.vmdk'], `vmdk ${version}`);
    }
    // The file protocol named as the format: its own name in the message, not raw's.
    if (LONG || i === 1) {
      const f = dirs.run(version, { 'x.img': Buffer.alloc(4096) }, ['amend', '-f', 'file', '-o', 'size=1M', 'x.img']);
      assertSameOutcome(f, ['x.img'], `-f file ${version}`);
    }
  }
});

test('amend runs the same through the real sandbox', () => {
  same('10.0', 'v2', ['-o', 'compat=1.1,lazy_refcounts=on'], 'sandboxed upgrade', true);
  same('7.2', 'autoclear', ['-o', 'backing_file=b'], 'sandboxed error after a write', true);
});

test('amend refuses, before writing anything, what needs more than a header rewrite', () => {
  const dir = mkdtempSync(join(scratch, 'refuse-'));
  const image = join(dir, 'img.qcow2');
  const cases: [string, string, RegExp][] = [
    ['dataFile', 'data_file=/etc/passwd', /instar refuses the data file name '\/etc\/passwd'/],
    ['dataFile', 'data_file=json:{}', /instar refuses the data file name/],
  ];
  writeFileSync(join(dir, 'data.raw'), '');
  for (const [name, options, why] of cases) {
    writeFileSync(image, images[name]);
    const r = runInstar(['amend', '-o', options, 'img.qcow2', '--sandbox=none'], { cwd: dir });
    assert.equal(r.status, 1, options);
    assert.match(r.stderr, /^qemu-img: instar .*nothing was written\n$/, options);
    assert.match(r.stderr, why, options);
    assert.ok(readFileSync(image).equals(images[name]), `${options}: the image is unchanged`);
  }
  // amend opens the backing chain (qemu would read /etc/passwd as the backing file): refused by the policy.
  const hostile = created(scratch, 'hostile.qcow2', 'backing_file=/etc/passwd,backing_fmt=raw', '1M', ['-u']);
  writeFileSync(image, hostile);
  const h = runInstar(['amend', '-o', 'lazy_refcounts=on', 'img.qcow2'], { cwd: dir });
  assert.equal(h.status, 1);
  assert.equal(h.stderr, "qemu-img: Could not open 'img.qcow2': Could not open backing file: '/etc/passwd' is outside the allowed paths (instar's path policy; allow it with --allow-path)\n");
  assert.ok(readFileSync(image).equals(hostile));
  const dirty = Buffer.from(images.lazy);
  dirty[79] |= 1;
  writeFileSync(image, dirty);
  // A dirty image is repaired at open (dirty-open-repair.test.ts), then amended, as qemu does.
  const r = runInstar(['amend', '-o', 'lazy_refcounts=off', 'img.qcow2', '--sandbox=none'], { cwd: dir });
  const qemuCopy = join(dir, 'qemu.qcow2');
  writeFileSync(qemuCopy, dirty);
  const q = runQemu('10.0', ['amend', '-o', 'lazy_refcounts=off', qemuCopy]);
  assert.equal(r.status, q.status);
  assert.equal(r.stderr, q.stderr);
  assert.ok(readFileSync(image).equals(readFileSync(qemuCopy)), 'the same file as qemu\'s');
});
