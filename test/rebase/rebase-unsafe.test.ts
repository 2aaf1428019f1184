// rebase -u on qcow2 and qed against qemu-img 7.2 and 10.0: each side changes its own copy of the same
// image; stdout, stderr, exit status and the resulting file must be identical byte for byte.
// Images cover both versions of the format, small clusters (no feature table; names that do not
// fit), external data files, extended L2, zstd, and hand-edited headers qemu's rewrite keeps
// (unknown fields and extensions) or cleans (unknown autoclear bits, a size in partial sectors).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, runInstar, runQemu } from '../helpers/oracles.ts';
import { assertSameOutcome } from './harness.ts';
import { created, extension, featureTable, staleBitmaps, withExtensions } from './images.ts';
import { TwinDirs } from '../check/fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import '../helpers/long.ts';

const dirs = new TwinDirs();
const scratch = mkdtempSync(join(tmpdir(), 'instar-rebase-'));
const images: Record<string, Buffer> = {};

before(() => {
  images.v3 = created(scratch, 'v3.qcow2', '');
  images.v2 = created(scratch, 'v2.qcow2', 'compat=0.10');
  images.c512 = created(scratch, 'c512.qcow2', 'cluster_size=512');
  images.c4k = created(scratch, 'c4k.qcow2', 'cluster_size=4096,lazy_refcounts=on');
  // Data files named relatively, so that each side's copy opens its own.
  images.dataFile = created(scratch, 'df.qcow2', 'data_file=data.raw');
  images.dataFileRaw = created(scratch, 'dfr.qcow2', 'data_file=data.raw,data_file_raw=on');
  images.extl2 = created(scratch, 'l2.qcow2', 'extended_l2=on,compression_type=zstd');
  images.backed = created(scratch, 'backed.qcow2', 'backing_file=old.qcow2,backing_fmt=qcow2', '1M', ['-u']);
  images.hostile = created(scratch, 'hostile.qcow2', 'backing_file=/etc/passwd,backing_fmt=raw', '1M', ['-u']);
  const table = featureTable(images.v3);
  images.unknownExt = withExtensions(images.v3, [
    extension(0x12345678, Buffer.from('hello')), table, extension(0x9abcdef0, Buffer.alloc(8, 0xee)),
  ]);
  images.headerFields = withExtensions(images.v3, [table, extension(0x0badcafe, Buffer.from('x'))], Buffer.alloc(8, 0xab));
  images.autoclear = Buffer.from(images.v3);
  images.autoclear[95] |= 0x24; // an unknown autoclear bit (qemu clears it) and a known one
  images.autoclear[95] &= ~0x02; // ... not data-file-raw, which needs a data file
  images.staleBitmaps = staleBitmaps(scratch, 'stale.qcow2');
  images.oddSize = Buffer.from(images.v3);
  images.oddSize.writeBigUInt64BE(1048576n + 100n, 24);
});

after(() => {
  dirs.remove();
  rmSync(scratch, { recursive: true, force: true });
});

/** Runs the same rebase on both sides and compares everything, the image's bytes included. */
function same(version: (typeof VERSIONS)[number], image: string, args: string[], label: string, sandboxed = false): void {
  const r = dirs.run(version, { 'img.qcow2': images[image], 'data.raw': Buffer.alloc(0) }, ['rebase', ...args, 'img.qcow2'], { sandboxed });
  assertSameOutcome(r, ['img.qcow2', 'data.raw'], `${label} (${image}, ${version})`);
}

/** Both oracles for every other case, 10.0 for the rest (the releases agree here; time is short). */
const versionsFor = (i: number): readonly (typeof VERSIONS)[number][] => (i % 2 === 0 ? VERSIONS : ['10.0']);

const LONG_600 = 'n'.repeat(600);
const LONG_1024 = 'n'.repeat(1024);

test('rebase -u names a new backing file exactly as qemu-img does, on every kind of qcow2 header', () => {
  Object.keys(images).forEach((image, i) => {
    for (const version of versionsFor(i)) same(version, image, ['-u', '-b', 'new.qcow2', '-F', 'qcow2'], 'new backing');
  });
});

test('rebase -u removes a backing file (-b "" and no -b at all) as qemu-img does', () => {
  for (const version of VERSIONS) {
    same(version, 'backed', ['-u', '-b', ''], 'remove');
    same(version, 'backed', ['-u'], 'no -b');
    same(version, 'backed', ['-u', '-b', '', '-F', 'qcow2'], 'remove, -F ignored');
    same(version, 'unknownExt', ['-u', '-b', ''], 'remove on an image without one');
  }
  // -u never opens the old backing file: a hostile name is simply replaced.
  same('10.0', 'hostile', ['-u', '-b', ''], 'remove a backing file outside the allowed paths');
});

test('rebase -u fails where qemu-img fails: no room, name too long, no -F, data-file-raw, other formats', () => {
  const cases: [string, string[], string][] = [
    ['c512', ['-u', '-b', LONG_600, '-F', 'raw'], 'no space in a 512-byte header'],
    ['v3', ['-u', '-b', LONG_600, '-F', 'raw'], 'a long name that fits'],
    ['v3', ['-u', '-b', LONG_1024, '-F', 'raw'], 'longer than 1023 bytes'],
    ['v3', ['-u', '-b', 'base.raw'], 'no -F'],
    ['v3', ['-u', '-b', 'base.raw', '-F', 'nosuchformat'], 'unknown -F'],
    ['v3', ['-u', '-b', 'x', '-F', 'copy-before-write'], 'a format name qemu cuts to 15 bytes'],
    ['dataFileRaw', ['-u', '-b', 'base.raw', '-F', 'raw'], 'a raw data file takes no backing file'],
    ['v3', ['-u', '-f', 'raw', '-b', 'x', '-F', 'raw'], 'raw has no backing file'],
    ['v3', ['-p', '-u', '-b', 'x', '-F', 'raw'], 'progress'],
    ['v3', ['-p', '-u', '-f', 'vmdk', '-b', 'x', '-F', 'raw'], 'progress, failed open'],
    ['v3', ['-u', '-t', 'bogus', '-b', 'x', '-F', 'raw'], 'bad cache mode'],
    ['autoclear', ['-u', '-b', 'base.raw'], 'a failure after the open rewrote the header'],
    ['staleBitmaps', ['-u', '-b', 'base.raw'], 'a failure after the open warned of stale bitmaps'],
    ['v3', ['-u', '-b', 'x', '-F', 'raw', 'second.qcow2'], 'two file names'],
  ];
  cases.forEach(([image, args, label], i) => {
    for (const version of versionsFor(i)) same(version, image, args, label);
  });
});

test('rebase -u on formats without backing files prints qemu-img\'s message', () => {
  for (const [format, extra] of [['vmdk', []], ['vpc', []], ['raw', []]] as const) {
    const path = join(scratch, `x.${format}`);
    assert.equal(runQemu('10.0', ['create', '-q', '-f', format, ...extra, path, '1M']).status, 0);
    const bytes = readFileSync(path);
    for (const version of VERSIONS) {
      // --unsafe-quirks: instar probes raw as qemu does only when asked to.
      const r = dirs.run(version, { [`x.${format}`]: bytes }, ['rebase', '-u', '-b', 'b.raw', '-F', 'raw', `x.${format}`], { instarArgs: ['--unsafe-quirks'] });
      assertSameOutcome(r, [`x.${format}`], `${format} ${version}`);
      assert.ok(readFileSync(join(r.instarDir, `x.${format}`)).equals(bytes), `${format}: unchanged`);
    }
  }
});

test('rebase -u on a LUKS-encrypted qcow2 wants its key, as qemu-img does', () => {
  const path = join(scratch, 'luks.qcow2');
  const secret = ['--object', 'secret,id=s0,data=abc'];
  const r = runQemu('10.0', ['create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', path, '1M']);
  assert.equal(r.status, 0, r.stderr);
  images.luks = readFileSync(path);
  same('10.0', 'luks', ['-u', '-b', 'x', '-F', 'raw'], 'no key');
  const withKey = dirs.run('7.2', { 'img.qcow2': images.luks }, ['rebase', '-u', '-b', 'x', '-F', 'raw', ...secret, '--image-opts', 'driver=qcow2,file.filename=img.qcow2,encrypt.key-secret=s0']);
  assertSameOutcome(withKey, ['img.qcow2'], 'with its key');
});

test('rebase -u runs the same through the real sandbox', () => {
  same('10.0', 'unknownExt', ['-u', '-b', 'new.qcow2', '-F', 'qcow2'], 'sandboxed', true);
  same('7.2', 'c512', ['-u', '-b', LONG_600, '-F', 'raw'], 'sandboxed, no space', true);
});

test('rebase -u refuses a new name the path policy would not follow, before writing anything', () => {
  const dir = mkdtempSync(join(scratch, 'policy-'));
  const image = join(dir, 'img.qcow2');
  symlinkSync('/etc/passwd', join(dir, 'link'));
  for (const name of ['/etc/passwd', 'json:{"driver":"raw"}', 'nbd://localhost/x', '../outside.qcow2', 'link']) {
    writeFileSync(image, images.backed);
    const r = runInstar(['rebase', '-u', '-b', name, '-F', 'raw', image]);
    assert.equal(r.status, 1, name);
    assert.match(r.stderr, /^qemu-img: Could not change the backing file to '.*': instar refuses this name \(.*\); nothing was written\n$/, name);
    assert.ok(readFileSync(image).equals(images.backed), `${name}: the image is unchanged`);
  }
  // A name inside the allowed tree that does not exist yet is what -u is for.
  writeFileSync(image, images.backed);
  const r = runInstar(['rebase', '-u', '-b', 'later.qcow2', '-F', 'qcow2', image, '--sandbox=none']);
  assert.equal(r.status, 0, r.stderr);
});

// With persistent bitmaps: test/bitmap/mutating-commands.test.ts.
test('rebase -u on a dirty image repairs it at open first, as qemu does', () => {
  const dirty = Buffer.from(images.c4k);
  dirty[79] |= 1;
  const r = dirs.run('10.0', { 'img.qcow2': dirty }, ['rebase', '-u', '-b', 'n', '-F', 'raw', 'img.qcow2']);
  assertSameOutcome(r, ['img.qcow2'], 'dirty (10.0)');
  assert.equal(readFileSync(join(r.instarDir, 'img.qcow2'))[79] & 1, 0, 'marked clean');
});

test('rebase without -u: the header-only cases as qemu (the copy loop is test/rebase/safe*.test.ts)', () => {
  for (const version of VERSIONS) same(version, 'v3', ['-b', ''], 'safe, no backing before or after');
  for (const version of VERSIONS) same(version, 'v3', ['-p', '-b', ''], 'safe with -p: the copy loop only prints progress');
  // Safe mode opens the old backing file first, as qemu does (and fails the same way).
  for (const version of VERSIONS) same(version, 'backed', ['-b', ''], 'safe, old backing file missing');
});

test('rebase -u on qed changes what qemu-img changes, byte for byte', () => {
  const path = join(scratch, 'q.qed');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qed', '-u', '-o', 'backing_file=old.raw,backing_fmt=raw,cluster_size=4096', path, '1M']).status, 0);
  const backed = readFileSync(path);
  const compat = Buffer.from(backed);
  compat[24] = 1; // an unknown compatible feature: qemu will not write a name after the header
  const autoclear = Buffer.from(backed);
  autoclear[32] = 0x80; // qemu's writable open clears it
  const cases: [Buffer, string[], string][] = [
    [backed, ['-b', 'base.qcow2', '-F', 'qcow2'], 'new backing'],
    [backed, ['-b', 'base.raw', '-F', 'raw'], 'raw: the no-probe bit'],
    [backed, ['-b', ''], 'remove'],
    [backed, ['-b', 'n'.repeat(4040), '-F', 'raw'], 'no room in one header cluster'],
    [compat, ['-b', 'x', '-F', 'raw'], 'unknown compat feature'],
    [compat, ['-b', ''], 'unknown compat feature, removing'],
    [autoclear, ['-b', 'x'], 'no -F after the open cleared autoclear bits'],
  ];
  cases.forEach(([bytes, args, label], i) => {
    for (const version of versionsFor(i)) {
      const r = dirs.run(version, { 'img.qed': bytes }, ['rebase', '-u', ...args, 'img.qed']);
      assertSameOutcome(r, ['img.qed'], `qed: ${label} (${version})`);
    }
  });
});
