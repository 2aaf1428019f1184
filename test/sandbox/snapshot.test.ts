// The guest's V8 startup snapshot (src/host/sandbox/snapshot.ts, made by scripts/guest-snapshot.ts):
// a real CLI run starts its guest from it; a stale, forged, damaged or missing one, or other
// flags, fall back to the code cache and give the same answer; and a guest started from it is
// still under the permission model and holds no descriptor of its blob.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HOSTILE_GUEST, expectRefused, runHostile, scratchDir, writeInput } from './helpers.ts';
import { runInstar } from '../helpers/oracles.ts';
import { codeCachePath } from '../../src/host/sandbox/code-cache.ts';
import { productionGuestPath } from '../../src/host/sandbox/guest-path.ts';
import { blobIdentity, bundleIdOnDisk, snapshotFiles, SNAPSHOT_FORMAT, type SnapshotRecord } from '../../src/host/sandbox/snapshot.ts';
import { nodeArgs } from '../../src/host/sandbox/layers/permission.ts';
import { defaultLimits } from '../../src/host/sandbox/limits.ts';
import { makeGuestSnapshots } from '../../scripts/guest-snapshot.ts';

const scratch = scratchDir();
after(scratch.cleanup);
const input = writeInput(scratch.dir, 'in.raw', Buffer.concat([Buffer.from('instar snapshot'), Buffer.alloc(1024 * 1024 - 15)]));

const record = (bundle: string): SnapshotRecord => JSON.parse(readFileSync(snapshotFiles(bundle).record, 'utf8')) as SnapshotRecord;

/**
 * A copy of the hostile guest with its code cache, blob and a record true for the copy; `edit`
 * changes the record, `blob` replaces the blob's bytes (the record then vouches for them).
 */
function guestCopy(name: string, edit: (r: SnapshotRecord) => void = () => {}, blob?: Buffer): string {
  const bundle = join(scratch.dir, `${name}.cjs`);
  const files = snapshotFiles(bundle);
  copyFileSync(HOSTILE_GUEST, bundle);
  copyFileSync(codeCachePath(HOSTILE_GUEST), codeCachePath(bundle));
  if (blob) writeFileSync(files.blob, blob);
  else copyFileSync(snapshotFiles(HOSTILE_GUEST).blob, files.blob);
  const r = { ...record(HOSTILE_GUEST), blob: blobIdentity(files.blob) };
  edit(r);
  writeFileSync(files.record, JSON.stringify(r));
  return bundle;
}

/** `instar --debug info` on the input with this guest: how it started, and what it printed. */
function cliInfo(guest: string): { start: string; stdout: string; debug: string } {
  const r = runInstar(['--debug', 'info', '-f', 'raw', input], { env: { INSTAR_TEST_GUEST: guest }, timeoutMs: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const start = /sandbox: guest start: (snapshot|code cache|plain) \(/.exec(r.stderr)?.[1];
  assert.ok(start, r.stderr);
  return { start, stdout: r.stdout, debug: r.stderr };
}

/** What the production guest, started from its snapshot, prints: every fallback must print the same. */
let expected = '';

describe('guest startup snapshot', () => {
  it('the build made one for each bundle, for this node, the guest\'s flags and the bundle now there', () => {
    for (const bundle of [productionGuestPath(), HOSTILE_GUEST]) {
      const r = record(bundle);
      assert.equal(r.format, SNAPSHOT_FORMAT);
      assert.equal(r.node, process.version);
      assert.equal(r.execPath, process.execPath);
      assert.equal(r.bundleId, bundleIdOnDisk(bundle));
      assert.deepEqual(r.blob, blobIdentity(snapshotFiles(bundle).blob));
      // One blob serves every op: the default limits give all of them the same V8 flags.
      for (const op of ['info', 'check', 'convert', 'commit']) assert.deepEqual(r.flags, nodeArgs('', defaultLimits(op, 3, 1), false), op);
    }
  });

  it('a real CLI run starts its guest from it', () => {
 const run = cliInfo(productionGuestPath());
    assert.equal(run.start, 'snapshot');
    expected = run.stdout;
    assert.match(expected, /^image: .*in\.raw\nfile format: raw\nvirtual size: 1 MiB \(1048576 bytes\)\n/);
  });

  it('the guest knows it started from the snapshot, and the op answers as from the code cache', async () => {
    assert.deepEqual(await runHostile('strict', 'code-cache-state', input), { state: 'snapshot' });
    assert.deepEqual(await runHostile('strict', 'read-input', input), { size: 1048576, head: 'instar snapshot\0' });
    const noBlob = guestCopy('no-blob');
    rmSync(snapshotFiles(noBlob).blob);
    assert.deepEqual(await runHostile('strict', 'code-cache-state', input, {}, { guestPath: noBlob }), { state: 'used' });
    assert.deepEqual(await runHostile('strict', 'read-input', input, {}, { guestPath: noBlob }), { size: 1048576, head: 'instar snapshot\0' });
  });

  it('a true copy is used; a stale record, another node, other flags, a missing blob or record fall back', async () => {
    assert.equal(cliInfo(guestCopy('true')).start, 'snapshot');
    const fallbacks: [string, string, RegExp][] = [
      ['stale', guestCopy('stale', (r) => (r.bundleId = '0'.repeat(64))), /another build of the bundle/],
      ['other-node', guestCopy('other-node', (r) => (r.node = 'v20.0.0')), /another node/],
      ['other-exec', guestCopy('other-exec', (r) => (r.execPath = '/opt/node/bin/node')), /another node/],
      ['other-flags', guestCopy('other-flags', (r) => (r.flags = ['--no-warnings', '--max-old-space-size=256'])), /other flags/],
      ['replaced', guestCopy('replaced', (r) => (r.blob.mtimeNs = '1')), /not the file its record describes/],
      ['no-record', guestCopy('no-record'), /no snapshot record/],
      ['no-blob', guestCopy('no-blob-cli'), /snapshot unreadable: ENOENT/],
    ];
    rmSync(snapshotFiles(join(scratch.dir, 'no-record.cjs')).record);
    rmSync(snapshotFiles(join(scratch.dir, 'no-blob-cli.cjs')).blob);
    for (const [name, guest, why] of fallbacks) {
      const run = cliInfo(guest);
      assert.equal(run.start, 'code cache', name);
      assert.match(run.debug, why, name);
      assert.equal(run.stdout, expected, name);
    }
    // Other limits are other V8 flags than the build's: the guest starts from the code cache.
    assert.deepEqual(await runHostile('strict', 'code-cache-state', input, {}, { limits: { memoryBytes: 512 * 1024 * 1024 } }), { state: 'rejected' });
  });

  it('a damaged blob its record vouches for costs a relaunch, not the answer', () => {
    // Cut short (so changed since the build): node aborts before any JS runs.
    for (const size of [0, 4096, 1 << 20]) {
      const cut = guestCopy(`cut-${size}`, () => {}, readFileSync(snapshotFiles(HOSTILE_GUEST).blob).subarray(0, size));
      const r = runInstar(['--debug', 'info', '-f', 'raw', input], { env: { INSTAR_TEST_GUEST: cut }, timeoutMs: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, expected);
      assert.match(r.stderr, /sandbox: guest start: node refused the snapshot .*; relaunching from the code cache/);
      assert.match(r.stderr, /sandbox: guest start: code cache \(/);
    }
  });

  it('a guest started from it can read no file by path (not even its blob), nor keeps a descriptor of it', async () => {
    const blob = snapshotFiles(HOSTILE_GUEST).blob;
    for (const disableLayers of [[], ['bwrap' as const]]) {
      assert.deepEqual(await runHostile('auto', 'code-cache-state', input, {}, { disableLayers }), { state: 'snapshot' });
      for (const path of ['/etc/hostname', blob, HOSTILE_GUEST, '/instar/guest.blob']) {
        assert.match(await expectRefused(runHostile('auto', 'read-path', input, { path }, { disableLayers })), /ENOENT|not permitted|ERR_ACCESS_DENIED/, path);
      }
      const { open } = (await runHostile('auto', 'list-fds', input, {}, { disableLayers })) as { open: { fd: number; file: boolean }[] };
      assert.deepEqual(open.filter((f) => f.file).map((f) => f.fd), [4]);
    }
  });

  it('the maker: a blob and then its record for a good bundle; for a bundle that fails, at its top level or in its warm-up, a warning and neither', async (t) => {
    const good = join(scratch.dir, 'made.cjs');
    copyFileSync(HOSTILE_GUEST, good);
    copyFileSync(codeCachePath(HOSTILE_GUEST), codeCachePath(good));
    const bad = join(scratch.dir, 'broken.cjs');
    writeFileSync(bad, `throw new Error('broken at its top level');\n//# instar-guest-id ${'ab'.repeat(32)}\n`);
    writeFileSync(snapshotFiles(bad).blob, 'an old blob');
    writeFileSync(snapshotFiles(bad).record, '{}');
    // One whose warm-up (src/guest/warm-up.ts) fails after the top level has run.
    const badLater = join(scratch.dir, 'broken-later.cjs');
    writeFileSync(badLater, `require('node:v8').startupSnapshot.setDeserializeMainFunction(() => {});\n(async () => { await null; throw new Error('warm-up failed'); })();\n//# instar-guest-id ${'cd'.repeat(32)}\n`);
    const warn = t.mock.method(console, 'warn', () => {});
    makeGuestSnapshots([good, bad, badLater]);
    assert.equal(warn.mock.callCount(), 2);
    assert.match(String(warn.mock.calls[0].arguments[0]), /^guest snapshot for .*broken\.cjs not made: node --build-snapshot failed \(exit 1\)/);
    assert.match(String(warn.mock.calls[1].arguments[0]), /^guest snapshot for .*broken-later\.cjs not made: node --build-snapshot failed \(exit 1\)/);
    for (const b of [bad, badLater]) {
      assert.equal(existsSync(snapshotFiles(b).blob), false);
      assert.equal(existsSync(snapshotFiles(b).record), false);
    }
    assert.deepEqual(record(good).blob, blobIdentity(snapshotFiles(good).blob));
    assert.deepEqual(await runHostile('strict', 'code-cache-state', input, {}, { guestPath: good }), { state: 'snapshot' });
  });

  it('a guest that runs out of heap is not taken for a refused snapshot (no second run)', async () => {
    const lines: string[] = [];
    assert.match(await expectRefused(runHostile('strict', 'heap-bomb', input, {}, { debug: (l) => lines.push(l) })), /memory limit exceeded/);
    assert.deepEqual(lines.filter((l) => /guest start/.test(l)), [`sandbox: guest start: snapshot (${snapshotFiles(HOSTILE_GUEST).blob})`]);
  });

  // Last: a refusal holds for the rest of this process.
  it('a blob made with other V8 flags than its record names (node exits 14) costs a relaunch, and no further try', async () => {
    // The launch's heap limit is 512 MiB; the record claims it, the blob was made with the default.
    const forged = guestCopy('forged', (r) => (r.flags = nodeArgs('', { ...defaultLimits('info', 1, 0), memoryBytes: 1024 * 1024 * 1024 }, false)));
    const lines: string[] = [];
    const run = (guestPath: string) => runHostile('strict', 'code-cache-state', input, {}, { guestPath, limits: { memoryBytes: 1024 * 1024 * 1024 }, debug: (l) => lines.push(l) });
    assert.deepEqual(await run(forged), { state: 'rejected' });
    assert.ok(lines.some((l) => /guest start: node refused the snapshot .*forged\.blob; relaunching from the code cache/.test(l)), lines.join('\n'));
    assert.deepEqual(await runHostile('strict', 'read-input', input, {}, { guestPath: forged, limits: { memoryBytes: 1024 * 1024 * 1024 } }), { size: 1048576, head: 'instar snapshot\0' });
    // The true blob too is now passed over by this process.
    assert.deepEqual(await runHostile('strict', 'code-cache-state', input), { state: 'used' });
  });
});
