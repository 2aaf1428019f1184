// The guest's V8 code cache (src/guest/loader.ts, made by scripts/guest-cache.ts at build time):
// used when it belongs to the bundle and to the guest's V8 flags, ignored (the op still runs and
// answers the same) when it is stale, damaged, empty or missing, and never a way for the guest
// to read its bundle or cache by path.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HOSTILE_GUEST, expectRefused, runHostile, scratchDir, writeInput } from './helpers.ts';
import { runOp } from '../../src/host/sandbox/run.ts';
import { codeCachePath } from '../../src/host/sandbox/code-cache.ts';
import { productionGuestPath } from '../../src/host/sandbox/guest-path.ts';
import { nodeArgs } from '../../src/host/sandbox/layers/permission.ts';
import { defaultLimits } from '../../src/host/sandbox/limits.ts';
import { CACHE_MAGIC, ID_MARK, bundleId } from '../../src/guest/loader.ts';
import { makeGuestCodeCache } from '../../scripts/guest-cache.ts';

const scratch = scratchDir();
after(scratch.cleanup);
const input = writeInput(scratch.dir, 'in.raw', Buffer.concat([Buffer.from('instar code cache'), Buffer.alloc(4096)]));
const LOADER = join(productionGuestPath(), '..', 'guest-loader.cjs');

async function cacheState(guestPath: string, extra: Parameters<typeof runHostile>[4] = {}): Promise<string> {
  // The op's answer must not depend on the cache: the control op reads the input either way.
  const read = (await runHostile('strict', 'read-input', input, {}, { guestPath, ...extra })) as { size: number; head: string };
  assert.deepEqual(read, { size: 4113, head: 'instar code cach' });
  return ((await runHostile('strict', 'code-cache-state', input, {}, { guestPath, ...extra })) as { state: string }).state;
}

/** A copy of the hostile guest (and, unless told otherwise, its cache) in its own directory. */
function guestCopy(name: string, cache?: (bytes: Buffer) => Buffer): string {
  const bundle = join(scratch.dir, `${name}.cjs`);
  copyFileSync(HOSTILE_GUEST, bundle);
  if (cache) writeFileSync(codeCachePath(bundle), cache(readFileSync(codeCachePath(HOSTILE_GUEST))));
  return bundle;
}

describe('guest code cache', () => {
  it('the build made one for each bundle, and V8 takes it with the guest\'s own flags', () => {
    for (const bundle of [productionGuestPath(), HOSTILE_GUEST]) {
      const source = readFileSync(bundle, 'utf8');
      assert.ok(bundleId(source), `${bundle} has no id line`);
      assert.ok(readFileSync(codeCachePath(bundle)).toString('latin1', 0, 200).startsWith(`${CACHE_MAGIC}${bundleId(source)} `));
      // The loader's own check, in a node started as the sandbox starts the guest's.
      const flags = nodeArgs(LOADER, defaultLimits('info', 1, 0), true);
      const probe = `const { loadGuest } = require(${JSON.stringify(LOADER)}); process.stdout.write(loadGuest(3, 4).state);`;
      const fds = [openSync(bundle, 'r'), openSync(codeCachePath(bundle), 'r')];
      try {
        const r = spawnSync(process.execPath, [...flags, '-e', probe], { stdio: ['ignore', 'pipe', 'pipe', ...fds], env: {}, encoding: 'utf8' });
        assert.equal(r.stdout, 'used', r.stderr);
      } finally {
        fds.forEach(closeSync);
      }
    }
  });

  it('the build\'s training ops (info, convert from and to raw, qcow2, vpc) still run to their result', async () => {
    // Requests written as the host sends them: a change on the host's side shows here, not as
    // a cache that silently covers less.
    const bundle = join(scratch.dir, 'trained.cjs');
    copyFileSync(HOSTILE_GUEST, bundle);
    const outcomes = makeGuestCodeCache(bundle, LOADER);
    assert.equal(outcomes.length, 7);
    for (const last of outcomes) assert.match(last, /^\{"type":"result"/);
    assert.equal(await cacheState(bundle), 'used');
  });

  it('a sandboxed guest starts from it, and without it from the bundle as before', async () => {
    // A copy with its cache but no startup snapshot (snapshot.test.ts): the loader's path.
    assert.equal(await cacheState(guestCopy('cached', (c) => c)), 'used');
    assert.equal(await cacheState(guestCopy('no-cache')), 'plain');
  });

  it('the loader refuses to run anything but a stamped bundle (an empty file would exit 0 silently)', () => {
    const empty = join(scratch.dir, 'empty.cjs');
    writeFileSync(empty, '');
    const fd = openSync(empty, 'r');
    try {
      const r = spawnSync(process.execPath, [LOADER, '3'], { stdio: ['ignore', 'pipe', 'pipe', fd], env: {}, encoding: 'utf8' });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /fd 3 is not an instar guest bundle \(no id line\)/);
    } finally {
      closeSync(fd);
    }
  });

  it('a stale, damaged or empty cache, or other V8 flags, only cost the plain compile', async () => {
    const stale = guestCopy('stale', (c) => c);
    // A rebuild: other code, another id; the cache still names the old one.
    const source = readFileSync(stale, 'utf8');
    writeFileSync(stale, source.replace(`${ID_MARK}${bundleId(source)}`, `// rebuilt\n${ID_MARK}${'0'.repeat(64)}`));
    assert.equal(await cacheState(stale), 'stale');

    const damaged = guestCopy('damaged', (c) => {
      const bad = Buffer.from(c);
      for (let i = bad.indexOf(0x0a) + 64; i < bad.length; i += 4099) bad[i] ^= 0x5a;
      return bad;
    });
    assert.equal(await cacheState(damaged), 'stale');
    assert.equal(await cacheState(guestCopy('empty', () => Buffer.alloc(0))), 'stale');
    // Another heap limit is another V8 flag: V8 refuses the cache and compiles.
    assert.equal(await cacheState(HOSTILE_GUEST, { limits: { memoryBytes: 512 * 1024 * 1024 } }), 'rejected');
  });

  it('the bundle and its cache come as descriptors: the guest can read neither by path, nor keeps them', async () => {
    const cache = codeCachePath(HOSTILE_GUEST);
    for (const disableLayers of [[], ['bwrap' as const]]) {
      for (const path of [HOSTILE_GUEST, cache]) {
        assert.match(await expectRefused(runHostile('auto', 'read-path', input, { path }, { disableLayers })), /ENOENT|not permitted|ERR_ACCESS_DENIED/);
      }
      const { open } = (await runHostile('auto', 'list-fds', input, {}, { disableLayers })) as { open: { fd: number; file: boolean }[] };
      assert.deepEqual(open.filter((f) => f.file).map((f) => f.fd), [4]);
    }
  });

  it('a production op answers the same with the cache as without it', async () => {
    const fd = openSync(input, 'r');
    try {
      const devices = [{ fd, role: 'input' as const, writable: false }];
      const options = { format: 'raw', unsafeQuirks: false, fileName: input, profile: { major: 10, minor: 0, childNodes: true, dirtyFlag: true, mapCompressed: true, snapshotUnderscores: true, vhdCurrentSize: true, newUsageErrors: true, luksDetachedHeader: true } };
      const withCache = await runOp('info', options, devices, { mode: 'strict' });
      const plain = join(scratch.dir, 'guest.cjs');
      copyFileSync(productionGuestPath(), plain);
      const without = await runOp('info', options, devices, { mode: 'strict', guestPath: plain });
      assert.deepEqual(withCache, without);
    } finally {
      closeSync(fd);
    }
  });
});
