import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, readFileSync, openSync, writeFileSync, symlinkSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { openReferenced, startChain, PathRefusedError, ReferenceOpenError } from '../../src/host/paths/resolve.ts';
import { allowFromEnv, DEFAULT_MAX_DEPTH, type PathPolicy, type RefusalKind } from '../../src/host/paths/policy.ts';
import type { ReferenceRole } from '../../src/host/paths/combine.ts';
import { makeTree } from './fixture.ts';

const tree = makeTree();
after(() => tree.cleanup());
const { base, img, top } = tree;
const policy: PathPolicy = { allow: [], maxDepth: DEFAULT_MAX_DEPTH };

function open(name: string, opts: { referrer?: string; role?: ReferenceRole; allow?: string[]; top?: string } = {}) {
  const chain = startChain(opts.top ?? top);
  const ref = openReferenced(name, opts.referrer ?? top, opts.role ?? 'backing', { ...policy, allow: opts.allow ?? [] }, chain);
  const text = readFileSync(ref.fd, 'utf8');
  closeSync(ref.fd);
  return { ...ref, text };
}

function refused(name: string, kind: RefusalKind, pattern: RegExp, opts: Parameters<typeof open>[1] = {}): void {
  assert.throws(() => open(name, opts), (e: unknown) => {
    assert.ok(e instanceof PathRefusedError, `expected a refusal, got ${String(e)}`);
    assert.equal(e.kind, kind, e.message);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  });
}

test('absolute /etc/passwd is outside the allowed paths', () => {
  refused('/etc/passwd', 'outside', /^Could not open backing file: '\/etc\/passwd' is outside the allowed paths \(instar's path policy; allow it with --allow-path\)$/);
});

test('../../etc/passwd is refused, and the message shows where it leads', () => {
  const up = '../'.repeat(img.split('/').length - 1);
  refused(`${up}etc/passwd`, 'outside', /^Could not open backing file: '.*\/img\/(\.\.\/)+etc\/passwd' \('\/etc\/passwd'\) is outside the allowed paths/);
  refused('../../etc/passwd', 'outside', /is outside the allowed paths/);
  refused('../../../../../../../../etc/passwd', 'outside', /outside the allowed paths/);
});

test('a symlink out of the allowlist is refused', () => {
  refused('outlink', 'outside', /symbolic link '.*\/img\/outlink' to '\/etc\/passwd', outside the allowed paths/);
});

test('a symlink chain that goes out and comes back is refused (relative and absolute)', () => {
  refused('outback', 'outside', /'.*\/img\/outback' goes through the symbolic link '.*\/img\/outback' to '\.\.\/outside\/back', outside the allowed paths/);
  refused('absoutback', 'outside', /symbolic link .*absoutback.* outside the allowed paths/);
  // ...while the file it ends at is allowed when named directly.
  assert.equal(open('b.raw').text, 'img/b.raw');
});

test('".." may pass through a parent on the way back in, but never ends outside', () => {
  assert.equal(open('../img/b.raw').text, 'img/b.raw');
  refused('..', 'outside', /\('.*instar-paths-[^/]*'\) is outside the allowed paths/);
  refused('../outside/secret.raw', 'outside', /is outside the allowed paths/);
});

test('protocol names are refused before anything is opened', () => {
  for (const name of ['json:{"driver":"file","filename":"/etc/passwd"}', 'nbd://127.0.0.1:1', 'nbd+unix:///x?socket=/s',
    'http://example.com/x', 'https://x/y', 'ftp://x/y', 'ssh://x/y', 'iscsi://x/y', 'file:/etc/passwd', 'file:b.raw']) {
    refused(name, 'protocol', /names the protocol '[a-z+]+:'; instar opens only plain files an image names \(instar's path policy\)$/);
  }
});

test('/proc, /sys and /dev are refused, even when / is allowed', () => {
  refused('/proc/self/environ', 'outside', /outside the allowed paths/);
  refused('/dev/zero', 'outside', /outside the allowed paths/);
  refused('/proc/self/environ', 'special-file', /leads into '\/proc'; instar never opens files under \/proc, \/sys or \/dev/, { allow: ['/'] });
  refused('/dev/zero', 'special-file', /leads into '\/dev'/, { allow: ['/'] });
  refused('/sys/kernel/notes', 'special-file', /leads into '\/sys'/, { allow: ['/'] });
});

test('a FIFO and a directory are refused without blocking', () => {
  refused('fifo', 'not-regular', /'.*\/img\/fifo' is a FIFO, not a regular file/);
  refused('dir', 'not-regular', /is a directory, not a regular file/);
  refused('.', 'not-regular', /is a directory/);
});

test('a device node inside the allowed directory is refused', { skip: process.getuid?.() !== 0 && 'mknod needs root' }, () => {
  const made = spawnSync('mknod', [join(img, 'null'), 'c', '1', '3']);
  assert.equal(made.status, 0, String(made.stderr));
  refused('null', 'not-regular', /is a character device, not a regular file/);
});

test('empty, overlong and control-character names are refused', () => {
  refused('', 'bad-name', /the name is empty/);
  refused('a'.repeat(4097), 'bad-name', /longer than 4096 bytes/);
  refused('b.raw\0/etc/passwd', 'bad-name', /'b\.raw\\x00\/etc\/passwd' contains control characters/);
  refused('b\n.raw', 'bad-name', /contains control characters/);
});

test('loops are found by device and inode: A->A and A->B->A', () => {
  const topFd = openSync(top, 'r');
  try {
    const self = startChain(top, topFd);
    assert.throws(() => openReferenced('top.qcow2', top, 'backing', policy, self),
      (e: unknown) => e instanceof PathRefusedError && e.kind === 'loop' && e.reason === `Backing file '${top}' creates an infinite loop.`);
    // The same file under another name (a symlink) is still the same file.
    symlinkSync('top.qcow2', join(img, 'toplink'));
    assert.throws(() => openReferenced('toplink', top, 'backing', policy, startChain(top, topFd)), (e: unknown) => e instanceof PathRefusedError && e.kind === 'loop');

    const chain = startChain(top, topFd);
    const b = openReferenced('b.raw', top, 'backing', policy, chain);
    closeSync(b.fd);
    assert.equal(chain.depth, 1);
    assert.throws(() => openReferenced('top.qcow2', b.path, 'backing', policy, chain), (e: unknown) => e instanceof PathRefusedError && e.kind === 'loop');
    // A data file that is one of the chain's images would be written over its own metadata.
    assert.throws(() => openReferenced(top, top, 'data-file', policy, chain), /is an image of this chain and cannot also be its data file/);
  } finally {
    closeSync(topFd);
  }
});

test('the 17th backing file is refused (depth limit 16)', () => {
  const names = Array.from({ length: 18 }, (_, i) => `level${i}.qcow2`);
  for (const n of names) writeFileSync(join(img, n), n);
  const chain = startChain(join(img, names[0]));
  for (let i = 1; i <= 16; i++) closeSync(openReferenced(names[i], join(img, names[i - 1]), 'backing', policy, chain).fd);
  assert.equal(chain.depth, 16);
  assert.throws(() => openReferenced(names[17], join(img, names[16]), 'backing', policy, chain),
    (e: unknown) => e instanceof PathRefusedError && e.kind === 'depth' && /backing chain is longer than 16 files/.test(e.message));
});

test('allowed: relative name in the same directory, a subdirectory, symlinks staying inside', () => {
  const same = open('b.raw');
  assert.equal(same.text, 'img/b.raw');
  assert.equal(same.path, join(img, 'b.raw'));
  assert.equal(same.resolved, join(img, 'b.raw'));
  assert.equal(open('sub/c.raw').text, 'img/sub/c.raw');
  const link = open('inlink');
  assert.equal(link.text, 'img/sub/c.raw');
  assert.equal(link.path, join(img, 'inlink'));
  assert.equal(link.resolved, join(img, 'sub', 'c.raw'));
  assert.equal(open('abslink').text, 'img/b.raw');
  assert.equal(open(join(img, 'sub', '..', 'b.raw')).text, 'img/b.raw');
});

test('--allow-path adds a root (also spelled through a symlink); INSTAR_ALLOW_PATH parses', () => {
  refused('../extra/x.raw', 'outside', /allow it with --allow-path/);
  assert.equal(open('../extra/x.raw', { allow: [join(base, 'extra')] }).text, 'extra/x.raw');
  symlinkSync('extra', join(base, 'extralink'));
  assert.equal(open(join(base, 'extralink', 'x.raw'), { allow: [join(base, 'extralink')] }).text, 'extra/x.raw');
  // Allowing one directory does not allow its sibling.
  refused('../outside/secret.raw', 'outside', /outside the allowed paths/, { allow: [join(base, 'extra')] });
  refused('/nonexistent/x', 'outside', /outside/, { allow: ['/nonexistent'] });
  assert.deepEqual(allowFromEnv({ INSTAR_ALLOW_PATH: '/a::/b c:' }), ['/a', '/b c']);
  assert.deepEqual(allowFromEnv({}), []);
});

test('the default root is the top image\'s directory for the whole chain', () => {
  const chain = startChain(join(img, 'sub', 'c.raw'));
  assert.throws(() => openReferenced('../b.raw', join(img, 'sub', 'c.raw'), 'backing', policy, chain), /outside the allowed paths/);
  // A backing file deeper down may still not name files above the top image's directory.
  const fromTop = startChain(top);
  closeSync(openReferenced('sub/c.raw', top, 'backing', policy, fromTop).fd);
  closeSync(openReferenced('../b.raw', join(img, 'sub', 'c.raw'), 'backing', policy, fromTop).fd);
  assert.throws(() => openReferenced('../../outside/secret.raw', join(img, 'sub', 'c.raw'), 'backing', policy, fromTop), /outside the allowed paths/);
});

test('relative names follow qemu: backing relative to the referrer as spelled, data file relative to the cwd', () => {
  const cwd = process.cwd();
  try {
    process.chdir(base);
    const r = open('b.raw', { referrer: 'img/top.qcow2', top: 'img/top.qcow2' });
    assert.equal(r.path, 'img/b.raw');
    assert.equal(r.text, 'img/b.raw');
    process.chdir(img);
    const d = open('sub/c.raw', { referrer: 'top.qcow2', top: 'top.qcow2', role: 'data-file' });
    assert.equal(d.path, 'sub/c.raw');
    // From img/sub the data file name "b.raw" means <cwd>/b.raw, which does not exist.
    process.chdir(join(img, 'sub'));
    assert.throws(() => open('b.raw', { referrer: '../top.qcow2', top: '../top.qcow2', role: 'data-file' }),
      (e: unknown) => e instanceof ReferenceOpenError && e.code === 'ENOENT' && e.message === "Could not open 'b.raw': No such file or directory");
  } finally {
    process.chdir(cwd);
  }
});

test('a missing backing file is worded as qemu-img words it', () => {
  assert.throws(() => open('missing.qcow2'), (e: unknown) => e instanceof ReferenceOpenError &&
    e.message === `Could not open backing file: Could not open '${join(img, 'missing.qcow2')}': No such file or directory`);
  assert.throws(() => open('b.raw/x'), (e: unknown) => e instanceof ReferenceOpenError && e.code === 'ENOTDIR');
});

test('the opened fd must be the file the walk found (a swap after the walk is refused)', async () => {
  const { openVerified, fileId } = await import('../../src/host/paths/resolve.ts');
  const { lstatSync } = await import('node:fs');
  const walkedB = fileId(lstatSync(join(img, 'b.raw'), { bigint: true }));
  // The walk saw b.raw; by open time another file sits at the path.
  assert.throws(() => openVerified(join(img, 'sub', 'c.raw'), walkedB, 'b.raw', 'backing'),
    (e: unknown) => e instanceof PathRefusedError && e.kind === 'race' && /changed while it was being checked/.test(e.message));
  // ...or a symlink: O_NOFOLLOW refuses to follow it.
  assert.throws(() => openVerified(join(img, 'inlink'), walkedB, 'inlink', 'backing'), (e: unknown) => e instanceof PathRefusedError && e.kind === 'race');
  const fd = openVerified(join(img, 'b.raw'), walkedB, 'b.raw', 'backing');
  closeSync(fd);
});
