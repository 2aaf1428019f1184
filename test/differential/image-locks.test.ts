// qemu's image locking: another process (qemu-io, as a VM would) holds an image open, read-write
// or read-only, while qemu-img 7.2 / 10.0 and instar run the same command line on it or on an
// image whose backing file it is. stderr (qemu's "Failed to get ... lock" and its hint), stdout and
// status alike, and instar never changes the held file where qemu refuses to (a VM's disk is not
// resized, committed, snapshotted, repaired or created over under it). Then the other way round:
// the locks instar holds stop qemu-img as qemu-img's own would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { INSTAR_ALIAS, VERSIONS, oracle, type OracleVersion } from '../helpers/oracles.ts';
import { instarRun, qemuRun, tempDir } from '../dd/helpers.ts';
import { lockImage, unlockImage, type LockUse } from '../../src/host/image-locks.ts';
import { createEarlyTarget, createFreshTarget } from '../../src/host/convert/fresh-target.ts';
import { createTarget } from '../../src/host/convert/create-target.ts';
import { LONG } from '../helpers/long.ts';

/**
 * Short tier: of a sweep of command lines run under each version's holder, a line runs with one
 * version (alternating with its index and the holder's), so every line meets every holder and
 * every version every holder, on one oracle; the long tier runs each with both. Each line is two
 * runs (qemu-img and instar) over a live holder, and the lock bytes they take are the version's.
 */
const inShortTier = (version: OracleVersion, ...indexes: number[]): boolean =>
  LONG || (VERSIONS.indexOf(version) + indexes.reduce((a, b) => a + b, 0)) % 2 === 0;

let dir: string;
let cleanup: () => void;
const p = (name: string) => join(dir, name);
const IMAGES = ['b.qcow2', 't.qcow2', 'c.qcow2'];

before(() => {
  ({ dir, cleanup } = tempDir('instar-locks-'));
  const ok = (r: { status: number | null; stderr: string }) => assert.equal(r.status, 0, r.stderr);
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', p('b.qcow2'), '4M']));
  ok(qemuRun('10.0', ['-f', 'qcow2', '-c', 'write -P 1 0 64k', p('b.qcow2')], undefined, 'qemu-io'));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', '-b', p('b.qcow2'), '-F', 'qcow2', p('t.qcow2')]));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', p('c.qcow2'), '4M']));
  for (const name of IMAGES) copyFileSync(p(name), p(`keep-${name}`));
});
after(() => cleanup());

/**
 * The images as they were before the case (written into the same files: a holder keeps its inode).
 * Only files that changed are rewritten: a holder that has just taken its locks may still be
 * reading the backing file's header, and a rewrite (truncation first) then fails its open.
 */
function restore(): void {
  for (const name of IMAGES) {
    const kept = readFileSync(p(`keep-${name}`));
    if (!existsSync(p(name)) || !readFileSync(p(name)).equals(kept)) writeFileSync(p(name), kept);
  }
  for (const name of ['o.raw', 'n.qcow2']) rmSync(p(name), { force: true });
}

/** qemu-io holding `image` open (its flags: '-r' read-only) until killed; resolves once its locks are taken. */
async function holder(version: OracleVersion, flags: string[], image: string): Promise<ChildProcess> {
  const child = spawn(oracle(version, 'qemu-io'), [...flags, '-f', 'qcow2', '-c', 'sleep 600000', p(image)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  // Its open is done when its locks on byte 201 (write not shared: both kinds of holder) show in
  // /proc/locks, on the image and on the backing file it opens with t.qcow2 (b.qcow2); a probing
  // open by another process could make its own open fail meanwhile.
  const held = [image, 'b.qcow2'].map((name) => new RegExp(`^\\d+: OFDLCK .* [0-9a-f]+:[0-9a-f]+:${statSync(p(name)).ino} 201 201$`, 'm'));
  for (let i = 0; i < 400 && child.exitCode === null; i++) {
    const locks = readFileSync('/proc/locks', 'utf8');
    if (held.every((r) => r.test(locks))) {
      holderErrors.set(child, () => stderr);
      return child;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  await release(child);
  throw new Error(`qemu-io ${flags.join(' ')} did not take its locks on ${image}: ${stderr}`);
}

/** What each holder printed (why it stopped, if it did). */
const holderErrors = new Map<ChildProcess, () => string>();

/** Kills the holder and waits until it is gone (its locks go with its last descriptor). */
async function release(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
  }
}

/** Command lines over the held image `held` (t.qcow2 itself, or its backing file b.qcow2). */
const commands = (held: string): string[][] => [
  ['info', p('t.qcow2')], ['info', '-U', p('t.qcow2')], ['info', '--backing-chain', p('t.qcow2')],
  ['map', p('t.qcow2')], ['map', '-U', p('t.qcow2')], ['check', p('t.qcow2')], ['snapshot', '-l', p('t.qcow2')],
  ['measure', '-O', 'qcow2', p('t.qcow2')], ['compare', p('t.qcow2'), p('c.qcow2')], ['compare', '-U', p('c.qcow2'), p('t.qcow2')],
  ['bench', '-c', '1', p('t.qcow2')], ['convert', '-O', 'raw', p('t.qcow2'), p('o.raw')], ['convert', '-U', '-O', 'raw', p('t.qcow2'), p('o.raw')],
  ['dd', `if=${p('t.qcow2')}`, `of=${p('o.raw')}`, 'bs=64k', 'count=1'],
  // Writers of the held image or of the image above it.
  ['resize', p('t.qcow2'), '+1M'], ['commit', p('t.qcow2')], ['commit', '-p', p('t.qcow2')], ['snapshot', '-c', 's', p('t.qcow2')],
  ['amend', '-o', 'lazy_refcounts=on', p('t.qcow2')], ['bitmap', '--add', p('t.qcow2'), 'b0'], ['rebase', '-u', '-b', p('b.qcow2'), p('t.qcow2')],
  ['rebase', '-b', p('c.qcow2'), '-F', 'qcow2', p('t.qcow2')], ['check', '-r', 'all', p('t.qcow2')], ['bench', '-w', '-c', '1', p('t.qcow2')],
  // The held file named as a target: created over, converted into, copied onto.
  ['create', '-f', 'qcow2', p(held), '1M'], ['create', '-f', 'raw', p(held), '1M'], ['convert', '-O', 'raw', p('c.qcow2'), p(held)],
  ['convert', '-O', 'qcow2', p('c.qcow2'), p(held)], ['convert', '-n', '-O', 'qcow2', p('c.qcow2'), p(held)], ['convert', '-n', '-O', 'raw', p('c.qcow2'), p(held)],
  ['dd', `if=${p('c.qcow2')}`, `of=${p(held)}`, 'bs=64k', 'count=1'],
  // The held file named as a backing file or a bitmap source: opened for reading (not by create).
  ['create', '-f', 'qcow2', '-b', p(held), '-F', 'qcow2', p('n.qcow2')], ['convert', '-O', 'qcow2', '-B', p(held), '-F', 'qcow2', p('c.qcow2'), p('n.qcow2')],
  ['rebase', '-b', p(held), '-F', 'qcow2', p('c.qcow2')], ['rebase', '-u', '-b', p(held), '-F', 'qcow2', p('c.qcow2')], ['bitmap', '--merge', 'x', '-b', p(held), p('c.qcow2'), 'b0'],
];

/** bench's timing, which differs between any two runs. */
const timed = (text: string) => text.replace(/^Run completed in \d+\.\d{3} seconds\.$/m, 'Run completed in X seconds.');

/** Outputs that differ between any two runs (snapshot dates in files) are not compared: only status and messages then. */
const DATED = new Set(['snapshot']);

for (const version of VERSIONS) {
  for (const [h, [flags, held]] of ([[[], 't.qcow2'], [[], 'b.qcow2'], [['-r'], 't.qcow2'], [['-r'], 'b.qcow2']] as [string[], string][]).entries()) {
    test(`${version}: qemu-io ${flags.join(' ') || '(read-write)'} holding ${held}: instar's messages and files as qemu-img's`, async () => {
      const child = await holder(version, flags, held);
      try {
        for (const [k, args] of commands(held).entries()) {
          if (!inShortTier(version, h, k)) continue;
          const label = `${version} ${flags.join(' ')} ${held}: ${args.join(' ').split(dir).join('.')}`;
          assert.equal(child.exitCode, null, `${label}: the holder still runs (${holderErrors.get(child)?.()})`);
          restore();
          const q = qemuRun(version, args);
          const qFiles = IMAGES.map((n) => readFileSync(p(n)));
          restore();
          const i = await instarRun(version, args);
          assert.equal(i.stderr, q.stderr, `${label}: stderr`);
          assert.equal(i.status, q.status, `${label}: status`);
          if (!DATED.has(args[0])) {
            assert.equal(timed(i.stdout), timed(q.stdout), `${label}: stdout`);
            IMAGES.forEach((n, k) => assert.ok(readFileSync(p(n)).equals(qFiles[k]), `${label}: ${n} as qemu-img left it`));
          }
          if (q.stderr.includes('lock')) assert.ok(readFileSync(p(held)).equals(readFileSync(p(`keep-${held}`))), `${label}: the held image untouched`);
        }
      } finally {
        await release(child);
        restore();
      }
    });
  }
}

// A raw image's format driver passes the file through and unshares nothing, but convert asks its
// sources to stay unwritten: a VM's raw disk can be read by info/map/compare/dd, not converted.
for (const version of VERSIONS) {
  test(`${version}: qemu-io holding a raw image read-write: instar's messages and files as qemu-img's`, async () => {
    const raw = p('r.raw');
    copyFileSync(p('keep-c.qcow2'), raw);
    const child = spawn(oracle(version, 'qemu-io'), ['-f', 'raw', '-c', 'sleep 600000', raw], { stdio: 'ignore' });
    try {
      const inode = statSync(raw).ino;
      for (let i = 0; i < 400 && !new RegExp(`:${inode} 101 101$`, 'm').test(readFileSync('/proc/locks', 'utf8')); i++) await new Promise((r) => setTimeout(r, 10));
      for (const args of [['info', '-f', 'raw', raw], ['map', '-f', 'raw', raw], ['compare', '-f', 'raw', '-F', 'raw', raw, raw], ['measure', '-f', 'raw', '-O', 'qcow2', raw],
        ['convert', '-f', 'raw', '-O', 'raw', raw, p('o.raw')], ['dd', '-f', 'raw', `if=${raw}`, `of=${p('o.raw')}`], ['resize', '-f', 'raw', raw, '+1M'], ['create', '-f', 'raw', raw, '1M']].filter((_, k) => inShortTier(version, k))) {
        rmSync(p('o.raw'), { force: true });
        copyFileSync(p('keep-c.qcow2'), raw);
        const q = qemuRun(version, args);
        const qBytes = readFileSync(raw);
        rmSync(p('o.raw'), { force: true });
        copyFileSync(p('keep-c.qcow2'), raw);
        const i = await instarRun(version, args);
        assert.deepEqual([i.status, i.stdout, i.stderr], [q.status, q.stdout, q.stderr], `${version}: ${args.join(' ')}`);
        // qemu resizes a raw image a VM has open (its raw driver shares resize): the same bytes either way.
        assert.ok(readFileSync(raw).equals(qBytes), `${version}: ${args.join(' ')}: the raw image as qemu-img left it`);
        assert.equal(child.exitCode, null, 'the holder still runs');
      }
    } finally {
      await release(child);
      rmSync(p('o.raw'), { force: true });
    }
  });
}

test('through the sandbox: a held image is not resized, and its readers are refused as qemu refuses them', async () => {
  const child = await holder('10.0', [], 't.qcow2');
  try {
    for (const args of [['resize', p('t.qcow2'), '+1M'], ['info', p('t.qcow2')], ['map', p('t.qcow2')]]) {
      restore();
      const q = qemuRun('10.0', args);
      const i = await instarRun('10.0', args, { sandboxed: true });
      assert.deepEqual([i.status, i.stderr], [q.status, q.stderr], args.join(' '));
      assert.match(q.stderr, /Failed to get (shared )?"write" lock\nIs another process using the image \[/);
    }
    assert.ok(readFileSync(p('t.qcow2')).equals(readFileSync(p('keep-t.qcow2'))));
  } finally {
    await release(child);
    restore();
  }
});

test("instar's locks keep qemu-img out as qemu-img's own would", () => {
  const cases: [LockUse, string[], RegExp | undefined][] = [
    ['write', ['info', p('c.qcow2')], /Failed to get shared "write" lock\nIs another process using the image \[.*c\.qcow2\]\?/],
    ['write', ['info', '-U', p('c.qcow2')], undefined],
    ['read', ['resize', p('c.qcow2'), '+1M'], /Failed to get "write" lock/],
    ['read', ['map', p('c.qcow2')], undefined],
    ['inspect', ['resize', p('c.qcow2'), '+1M'], /Failed to get "write" lock/],
    ['create', ['info', p('c.qcow2')], /Failed to get shared "write" lock/],
  ];
  for (const version of VERSIONS) {
    for (const [use, args, refused] of cases) {
      restore();
      const fd = openSync(p('c.qcow2'), 'r+');
      try {
        lockImage(fd, use, false, p('c.qcow2'));
        const r = qemuRun(version, args);
        if (refused) assert.match(r.stderr, refused, `${version} ${use}: ${args[0]}`);
        else assert.equal(r.status, 0, `${version} ${use}: ${args[0]}: ${r.stderr}`);
        unlockImage(fd);
        assert.equal(qemuRun(version, args).status, 0, `${version} ${use}: ${args[0]} once unlocked`);
      } finally {
        closeSync(fd);
      }
    }
  }
});

// convert's new raw target, made by the one round (O_EXCL, maybe at the CLI's early start) or the
// two rounds (created over): while it is written it holds what qemu's own target holds then,
// measured on the oracles' converts: bytes 100 and 101, nothing unshared.
/** The lock bytes any process holds on `path` (/proc/locks joins adjacent bytes: "100 101"). */
function heldBytes(path: string): number[] {
  const inode = statSync(path).ino;
  const bytes = new Set<number>();
  for (const m of readFileSync('/proc/locks', 'utf8').matchAll(/:(\d+) (\d+) (\d+)$/gm)) {
    if (Number(m[1]) !== inode) continue;
    for (let b = Number(m[2]); b <= Number(m[3]); b++) bytes.add(b);
  }
  return [...bytes].sort((x, y) => x - y);
}

/** What qemu-img convert holds on its new raw target once it writes it (byte 100: its create never holds it). */
async function qemuTargetLocks(version: OracleVersion, target: string): Promise<number[]> {
  rmSync(target, { force: true });
  // -r: 1 MiB/s over 4 MiB keeps the copy going for seconds.
  const child = spawn(oracle(version), ['convert', '-f', 'raw', '-O', 'raw', '-r', '1M', p('src4.raw'), target], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 400 && child.exitCode === null; i++) {
      if (existsSync(target) && heldBytes(target).includes(100)) return heldBytes(target);
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`qemu-img ${version} convert did not lock its target`);
  } finally {
    await release(child);
    rmSync(target, { force: true });
  }
}

test("convert's new raw target holds qemu's target locks while it is written, made by the command, the early start or the two rounds", async () => {
  writeFileSync(p('src4.raw'), Buffer.alloc(4 * 1024 * 1024, 1));
  const target = p('fresh.raw');
  for (const version of VERSIONS) assert.deepEqual(await qemuTargetLocks(version, target), [100, 101], `qemu-img ${version}'s own target`);
  for (const how of ['command', 'early start', 'two rounds'] as const) {
    rmSync(target, { force: true });
    if (how === 'early start') assert.notEqual(createEarlyTarget(target), undefined);
    const fd = how === 'two rounds' ? createTarget(target, 1024n * 1024n, true) : createFreshTarget(target);
    assert.notEqual(fd, undefined);
    try {
      assert.deepEqual(heldBytes(target), [100, 101], how);
      // A reader of a qcow2 does not share write, which the target holds; a raw resize shares everything, as with qemu's target.
      for (const version of VERSIONS) {
        const r = qemuRun(version, ['info', '-f', 'qcow2', target]);
        assert.ok(r.stderr.includes(`Failed to get shared "write" lock\nIs another process using the image [${target}]?`), `${version} ${how}: ${r.stderr}`);
        assert.equal(r.status, 1);
        const resized = qemuRun(version, ['resize', '-f', 'raw', target, '+1M']);
        assert.equal(resized.status, 0, `${version} ${how}: ${resized.stderr}`);
      }
    } finally {
      closeSync(fd!);
      rmSync(target, { force: true });
    }
    assert.equal(qemuRun('10.0', ['create', '-q', '-f', 'raw', target, '1M']).status, 0, 'free once closed');
    rmSync(target, { force: true });
  }
});

// The files an image names: a qcow2's data file and a VMDK's flat extents are their format's data
// children (qemu unshares their resizing, not their writing; convert's sources both), sparse
// extents are locked as images are, and the files of an image being written are written. Holders:
// qemu-io on the named file itself (as raw, read-write), or read-only on a twin image naming the same file.
const NAMED = ['dq.qcow2', 'dq.data', 'twin.qcow2', 'fl.vmdk', 'fl-flat.vmdk', 'twin-fl.vmdk', 'sp.vmdk', 'sp-s001.vmdk', 'twin-sp.vmdk'];

function buildNamedFiles(): void {
  const ok = (r: { status: number | null; stderr: string }) => assert.equal(r.status, 0, r.stderr);
  // The data file by its full path: qemu takes a relative one from the working directory.
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${p('dq.data')}`, 'dq.qcow2', '1M'], dir));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'fl.vmdk', '1M'], dir));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'sp.vmdk', '1M'], dir));
  for (const [image, format] of [['dq.qcow2', 'qcow2'], ['fl.vmdk', 'vmdk'], ['sp.vmdk', 'vmdk']]) ok(qemuRun('10.0', ['-f', format, '-c', 'write -P 7 0 64k', image], dir, 'qemu-io'));
  // Twins name the same files by the same relative names.
  for (const [from, to] of [['dq.qcow2', 'twin.qcow2'], ['fl.vmdk', 'twin-fl.vmdk'], ['sp.vmdk', 'twin-sp.vmdk']]) copyFileSync(p(from), p(to));
  for (const name of NAMED) copyFileSync(p(name), p(`keep-${name}`));
}

/** qemu-io holding `file` as `format` (flags: '-r' read-only) until its lock on `byte` of `lockedFile` shows. */
async function namedHolder(version: OracleVersion, flags: string[], format: string, file: string, lockedFile: string, byte: number): Promise<ChildProcess> {
  const child = spawn(oracle(version, 'qemu-io'), [...flags, '-f', format, '-c', 'sleep 600000', file], { stdio: 'ignore', cwd: dir });
  // /proc/locks joins a process's adjacent bytes into one range ("100 101").
  const inode = statSync(p(lockedFile)).ino;
  const held = () => [...readFileSync('/proc/locks', 'utf8').matchAll(/:(\d+) (\d+) (\d+)$/gm)].some((m) => Number(m[1]) === inode && Number(m[2]) <= byte && byte <= Number(m[3]));
  for (let i = 0; i < 400 && child.exitCode === null; i++) {
    if (held()) return child;
    await new Promise((r) => setTimeout(r, 10));
  }
  await release(child);
  throw new Error(`qemu-io ${flags.join(' ')} ${file} did not lock byte ${byte} of ${lockedFile}`);
}

const HOLDERS: [string[], string, string, string, number, string][] = [
  // flags, format, held file, file whose lock byte shows it is held, the byte, the image the commands open
  [[], 'raw', 'dq.data', 'dq.data', 101, 'dq.qcow2'],
  [['-r'], 'qcow2', 'twin.qcow2', 'dq.data', 100, 'dq.qcow2'],
  [[], 'raw', 'fl-flat.vmdk', 'fl-flat.vmdk', 101, 'fl.vmdk'],
  [['-r'], 'vmdk', 'twin-fl.vmdk', 'fl-flat.vmdk', 100, 'fl.vmdk'],
  [['-r'], 'vmdk', 'twin-sp.vmdk', 'sp-s001.vmdk', 201, 'sp.vmdk'],
];

for (const version of VERSIONS) {
  test(`${version}: qemu-io holding a data file or a VMDK extent: instar's messages and files as qemu-img's`, async () => {
    buildNamedFiles();
    const restoreNamed = () => {
      for (const name of NAMED) copyFileSync(p(`keep-${name}`), p(name));
      rmSync(p('o.raw'), { force: true });
    };
    for (const [h, [flags, format, held, lockedFile, byte, image]] of HOLDERS.entries()) {
      const child = await namedHolder(version, flags, format, held, lockedFile, byte);
      try {
        for (const [k, args] of [['info', p(image)], ['map', p(image)], ['convert', '-O', 'raw', p(image), p('o.raw')], ['check', '-r', 'all', p(image)], ...(image === 'dq.qcow2' ? [] : [['resize', p(image), '2M']])].entries()) {
          if (!inShortTier(version, h, k)) continue;
          const label = `${version} qemu-io ${flags.join(' ')} ${held}: ${args.join(' ').split(dir).join('.')}`;
          restoreNamed();
          const q = qemuRun(version, args, dir);
          const qFiles = NAMED.map((n) => readFileSync(p(n)));
          restoreNamed();
          const i = await instarRun(version, args, { cwd: dir });
          assert.deepEqual([i.status, i.stderr, i.stdout], [q.status, q.stderr, q.stdout], label);
          NAMED.forEach((n, k) => assert.ok(readFileSync(p(n)).equals(qFiles[k]), `${label}: ${n} as qemu-img left it`));
          assert.equal(child.exitCode, null, `${label}: the holder still runs`);
        }
      } finally {
        await release(child);
        restoreNamed();
      }
    }
  });
}

// convert -n into an existing file: a raw target holds what a new raw one does (bytes 100 and 101,
// nothing unshared: no resize asked), a qcow2 target what an image written holds. Measured live
// on both oracles' converts (slowed by -r) and on the built CLI's, while they write (settledLocks, below).
test('convert -n holds on an existing raw or qcow2 target what qemu-img holds while it writes', async () => {
  writeFileSync(p('src4.raw'), Buffer.alloc(4 * 1024 * 1024, 1));
  for (const [format, expected] of [['raw', [100, 101]], ['qcow2', [100, 101, 103, 201, 203]]] as const) {
    const target = p(`into.${format}`);
    for (const version of VERSIONS) {
      const args = ['convert', '-n', '-f', 'raw', '-O', format, '-r', '1M', p('src4.raw'), target];
      const make = () => {
        rmSync(target, { force: true });
        assert.equal(qemuRun('10.0', ['create', '-q', '-f', format, target, '4M']).status, 0);
      };
      make();
      assert.deepEqual(await settledLocks([oracle(version), ...args], [target], true), [expected], `qemu-img ${version} -n into ${format}`);
      make();
      assert.deepEqual(await settledLocks([process.execPath, INSTAR_ALIAS, '--qemu-version', version, ...args], [target], false), [expected], `instar ${version} -n into ${format}`);
      rmSync(target, { force: true });
    }
  }
});

// Hence a raw file whose resize another process does not share (a qcow2's data file, held by a
// reader of that qcow2) is converted into as qemu does: only its write is asked for.
for (const version of VERSIONS) {
  test(`${version}: convert -n into a data file a reader holds: instar's messages and file as qemu-img's`, async () => {
    buildNamedFiles();
    writeFileSync(p('src1.raw'), Buffer.alloc(1024 * 1024, 5));
    const child = await namedHolder(version, ['-r'], 'qcow2', 'twin.qcow2', 'dq.data', 100);
    try {
      const args = ['convert', '-n', '-f', 'raw', '-O', 'raw', p('src1.raw'), p('dq.data')];
      copyFileSync(p('keep-dq.data'), p('dq.data'));
      const q = qemuRun(version, args);
      const qBytes = readFileSync(p('dq.data'));
      assert.equal(q.status, 0, q.stderr);
      copyFileSync(p('keep-dq.data'), p('dq.data'));
      const i = await instarRun(version, args);
      assert.deepEqual([i.status, i.stderr, i.stdout], [q.status, q.stderr, q.stdout]);
      assert.ok(readFileSync(p('dq.data')).equals(qBytes), 'dq.data as qemu-img left it');
      assert.equal(child.exitCode, null, 'the holder still runs');
    } finally {
      await release(child);
      copyFileSync(p('keep-dq.data'), p('dq.data'));
    }
  });
}

// A new image in another format: once created, each of its files holds what qemu's open of the
// image holds while it writes: the image (and a sparse VMDK extent) 100, 101, 103, 201, 203; its
// data file or flat extent 100, 101, 103, 203. Measured live on both oracles' converts and the
// built CLI's; instar's copy is fast, so the lock table is read every few milliseconds.
/**
 * The lock bytes on each of `files` once all hold byte 100: alike in two reads in a row, or for
 * qemu-img (`slow`: slowed by -r), 300 ms later, still copying (its open holds 100, 101, 103 a while
 * before it unshares anything).
 */
async function settledLocks(command: string[], files: string[], slow: boolean): Promise<number[][]> {
  const child = spawn(command[0], command.slice(1), { stdio: 'ignore' });
  const read = () => files.map((f) => (existsSync(f) ? heldBytes(f) : []));
  try {
    let last = '';
    for (let i = 0; i < 3000 && child.exitCode === null; i++) {
      const now = read();
      const key = JSON.stringify(now);
      if (now.every((b) => b.includes(100)) && slow) {
        await new Promise((r) => setTimeout(r, 300));
        const later = read();
        assert.equal(child.exitCode, null, `${command.join(' ')}: still copying`);
        return later;
      }
      if (now.every((b) => b.includes(100)) && key === last) return now;
      last = key;
      await new Promise((r) => setTimeout(r, 2));
    }
    throw new Error(`${command.join(' ')} did not lock ${files.join(', ')} as it writes`);
  } finally {
    await release(child);
  }
}

test("convert's new image in another format holds qemu's locks on its files while it is written", async () => {
  writeFileSync(p('src16.raw'), Buffer.alloc(16 * 1024 * 1024, 3));
  const IMAGE = [100, 101, 103, 201, 203];
  const DATA = [100, 101, 103, 203];
  const cases: [string[], string[], number[][]][] = [
    [['-O', 'qcow2'], ['n.qcow2'], [IMAGE]],
    [['-O', 'vmdk'], ['n.vmdk'], [IMAGE]],
    [['-O', 'vpc'], ['n.vpc'], [IMAGE]],
    [['-O', 'vhdx'], ['n.vhdx'], [IMAGE]],
    [['-O', 'qcow2', '-o', `data_file=${p('n.data')}`], ['n.qcow2', 'n.data'], [IMAGE, DATA]],
    [['-O', 'vmdk', '-o', 'subformat=monolithicFlat'], ['n.vmdk', 'n-flat.vmdk'], [IMAGE, DATA]],
    [['-O', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse'], ['n.vmdk', 'n-s001.vmdk'], [IMAGE, IMAGE]],
  ];
  // Short tier: each lock set once (an image; an image and its data file; an image and a sparse
  // extent), on both oracles; the other formats hold the same sets (long tier).
  const SHORT = ['-O qcow2', '-O qcow2 -o data_file', '-O vmdk -o subformat=twoGbMaxExtentSparse'];
  for (const [options, names, expected] of cases.filter(([o]) => LONG || SHORT.some((k) => o.join(' ').startsWith(k)))) {
    const files = names.map(p);
    const clear = () => files.forEach((f) => rmSync(f, { force: true }));
    for (const version of VERSIONS) {
      const args = ['convert', '-f', 'raw', ...options, '-r', '1M', p('src16.raw'), files[0]];
      const label = options.join(' ');
      clear();
      assert.deepEqual(await settledLocks([oracle(version), ...args], files, true), expected, `qemu-img ${version} ${label}`);
      clear();
      assert.deepEqual(await settledLocks([process.execPath, INSTAR_ALIAS, '--qemu-version', version, ...args], files, false), expected, `instar ${version} ${label}`);
      clear();
    }
  }
});

// convert -n into an existing VMDK with a flat extent: the extent is the VMDK's data child (100,
// 101, 103, 203), the descriptor an image written.
test('convert -n into a flat VMDK holds qemu-img\'s locks on its descriptor and extent while it writes', async () => {
  writeFileSync(p('src16.raw'), Buffer.alloc(16 * 1024 * 1024, 3));
  const files = [p('x.vmdk'), p('x-flat.vmdk')];
  const expected = [[100, 101, 103, 201, 203], [100, 101, 103, 203]];
  const make = () => {
    files.forEach((f) => rmSync(f, { force: true }));
    assert.equal(qemuRun('10.0', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', files[0], '16M']).status, 0);
  };
  for (const version of VERSIONS) {
    const args = ['convert', '-n', '-f', 'raw', '-O', 'vmdk', '-r', '1M', p('src16.raw'), files[0]];
    make();
    assert.deepEqual(await settledLocks([oracle(version), ...args], files, true), expected, `qemu-img ${version}`);
    make();
    assert.deepEqual(await settledLocks([process.execPath, INSTAR_ALIAS, '--qemu-version', version, ...args], files, false), expected, `instar ${version}`);
  }
  files.forEach((f) => rmSync(f, { force: true }));
});
