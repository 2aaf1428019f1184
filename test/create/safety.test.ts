// What `create` does beyond qemu's bytes: a failed create leaves no file it created, a refused one
// leaves an existing file as it was, backing files go through the path policy (also the ones a
// backing file names), encryption is refused in one line, and the real sandbox writes the same
// files as in-process runs (and as qemu-img).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { INSTAR_ALIAS, runQemu } from '../helpers/oracles.ts';
import { runAsync } from './harness.ts';

const dir = new ImageDir('create-safety');

before(() => {
  dir.mkdir('top');
  dir.img('create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', 'top/evil.q', '1M');
  dir.img('create', '-q', '-f', 'qcow2', 'top/base.q', '1M');
});
after(() => dir.remove());

const instar = (args: string[], sandboxed = false) =>
  runAsync(process.execPath, [INSTAR_ALIAS, ...args, ...(sandboxed ? [] : ['--sandbox=none'])], dir.dir);

test('create: a create that fails after the file was created removes it (in-process and sandboxed)', async () => {
  for (const sandboxed of [false, true]) {
    // ext4 takes no file of 16 TiB or more: ftruncate fails with EFBIG, as for qemu.
    const r = await instar(['create', '-f', 'raw', 'big.raw', '17T'], sandboxed);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, "qemu-img: big.raw: The image size is too large for file format 'raw'\n");
    assert.equal(existsSync(dir.path('big.raw')), false, 'instar left the file behind');
  }
});

test('create: options refused before anything is written leave an existing file as it was', async () => {
  writeFileSync(dir.path('keep.img'), 'precious');
  // raw's preallocation=metadata too: qemu's file protocol refuses it after opening the file, which
  // it leaves empty (an existing one emptied); instar leaves no file and an existing one as it was.
  for (const args of [['-f', 'qcow2', '-o', 'cluster_size=1000'], ['-f', 'qcow2', '-o', 'encrypt.format=luks'], ['-f', 'raw', '-o', 'preallocation=metadata'], ['-f', 'file', '-o', 'preallocation=metadata']]) {
    const r = await instar(['create', ...args, 'keep.img', '1M']);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(readFileSync(dir.path('keep.img'), 'utf8'), 'precious');
  }
  // An encrypted image whose secret was not given (--object): qemu's message, and no file.
  const refused = await instar(['create', '-q', '-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s', 'new.q', '1M']);
  assert.equal(refused.stderr, "qemu-img: new.q: No secret with id 's'\n");
  assert.equal(existsSync(dir.path('new.q')), false);
});

test('create: backing files pass the path policy, also those a backing file names', async () => {
  const cases: [string[], RegExp][] = [
    [['-b', '/etc/passwd', '-F', 'raw', 'top/a.q'], /^qemu-img: top\/a\.q: '\/etc\/passwd' is outside the allowed paths .*\nCould not open backing image\.\n$/],
    [['-b', 'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/passwd"}}', '-F', 'raw', 'top/b.q'], /names the protocol 'json:'/],
    [['-b', 'evil.q', '-F', 'qcow2', 'top/c.q'], /^qemu-img: top\/c\.q: Could not open backing file: '\/etc\/passwd' is outside the allowed paths/],
  ];
  for (const sandboxed of [false, true]) {
    for (const [args, message] of cases) {
      const r = await instar(['create', '-f', 'qcow2', ...args], sandboxed);
      assert.equal(r.status, 1);
      assert.match(r.stderr, message);
      assert.equal(existsSync(dir.path(args.at(-1)!)), false);
    }
  }
  // -u opens nothing: the name is only written into the new image, as qemu does.
  const unsafe = await instar(['create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', 'top/d.q', '1M']);
  assert.equal(unsafe.status, 0, unsafe.stderr);
});

test('create: the sandboxed guest writes the same files as qemu-img, with the same mode and allocation', async () => {
  const lines = [
    ['create', '-f', 'qcow2', '-b', 'base.q', '-F', 'qcow2', 'top/s1.q'],
    ['create', '-f', 'qcow2', '-o', 'preallocation=metadata,cluster_size=4k', 'top/s2.q', '3M'],
    ['create', '-f', 'raw', '-o', 'preallocation=full', 'top/s3.raw', '1M'],
    ['create', '-f', 'raw', 'top/s4.raw', '1M'],
  ];
  for (const args of lines) {
    const target = args.at(-1)!.startsWith('top/') ? args.at(-1)! : args.at(-2)!;
    const r = await instar(args, true);
    assert.equal(r.status, 0, r.stderr);
    const mine = readFileSync(dir.path(target));
    const mineStat = statSync(dir.path(target));
    const q = runQemu('10.0', args.map((a) => (a === target ? `${target}.qemu` : a)), { cwd: dir.dir });
    assert.equal(q.status, 0, q.stderr);
    assert.equal(r.stdout, q.stdout.split(`${target}.qemu`).join(target));
    assert.ok(mine.equals(readFileSync(dir.path(`${target}.qemu`))), `${target} differs from qemu's`);
    const theirs = statSync(dir.path(`${target}.qemu`));
    assert.equal(mineStat.mode, theirs.mode);
    // Allocated as qemu allocates it: full preallocation writes every byte, off leaves holes.
    assert.equal(mineStat.blocks > 0 && mineStat.blocks * 512 >= mineStat.size, theirs.blocks > 0 && theirs.blocks * 512 >= theirs.size, `${target} allocation`);
  }
});
