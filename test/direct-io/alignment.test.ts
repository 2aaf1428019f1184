// A writable open with cache=none/directsync of a raw (or file) image whose start is a hole: qemu's
// O_DIRECT alignment probe falls back to 4096 there, and a size it does not divide is refused at
// the open ("Cannot get 'write' permission without 'resize': ..."), for commit, rebase, amend
// and check -r alike (found by the mutating hunt, campaign 8484 case 23: instar went on and said
// "Did not find ... in the backing chain"). Data at the start, a size of whole 4 KiB blocks or a
// cached mode open as before. Both oracles and instar on twin directories of sparse files; instar
// with --sandbox=none in this process (runCommandLine, as the CLI runs it) rather than a Node start each.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, oracle, runQemu } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { collapseRepeats } from '../commit/harness.ts';

const root = mkdtempSync(join(tmpdir(), 'instar-direct-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** Sparse files: [name, size, bytes written at offset 0]. */
const FILES: [string, number, string?][] = [
  ['top.vhd', 17288184320],
  ['hole.raw', 3168768],
  ['data.raw', 3168768, 'data'],
  ['whole.raw', 3170304],
];

function twin(label: string): string[] {
  return ['q', 'i'].map((side) => {
    const dir = join(root, label, side);
    mkdirSync(dir, { recursive: true });
    for (const [name, size, head] of FILES) {
      writeFileSync(join(dir, name), head ?? '');
      truncateSync(join(dir, name), size);
    }
    return dir;
  });
}

const CASES: string[][] = [
  ['commit', '-f', 'raw', '-d', '-b', 'top.vhd', '-t', 'none', 'top.vhd'],
  ['commit', '-t', 'off', '-f', 'file', 'hole.raw'],
  ['check', '-r', 'all', '-T', 'none', '-f', 'raw', 'hole.raw'],
  ['amend', '-t', 'none', '-f', 'raw', '-o', 'size=1M', 'hole.raw'],
  ['rebase', '-t', 'directsync', '-f', 'raw', '-u', '-b', '', 'hole.raw'],
  // Data at the start (the probe finds 512), whole 4 KiB blocks, a cached open: no refusal.
  ['commit', '-f', 'raw', '-b', 'data.raw', '-t', 'none', 'data.raw'],
  ['commit', '-f', 'raw', '-b', 'whole.raw', '-t', 'none', 'whole.raw'],
  ['commit', '-f', 'raw', '-b', 'hole.raw', '-t', 'writeback', 'hole.raw'],
];

for (const version of VERSIONS) {
  test(`writable O_DIRECT opens of raw images: qemu-img ${version}'s alignment refusal`, async () => {
    let refused = 0;
    for (const [n, args] of CASES.entries()) {
      const [qdir, idir] = twin(`${version}-${n}`);
      const qemu = runQemu(version, args, { cwd: qdir });
      qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
      const instar = await runInProcess([...args, '--qemu-version', version, '--sandbox=none'], idir);
      const label = `${version}: ${args.join(' ')}`;
      assert.equal(instar.stderr, qemu.stderr, label);
      assert.equal(instar.stdout, qemu.stdout, label);
      assert.equal(instar.status, qemu.status, label);
      if (qemu.stderr.includes('not a multiple of request alignment')) refused++;
      for (const [name] of FILES.filter(([, size]) => size < 2 ** 30)) {
        assert.ok(readFileSync(join(idir, name)).equals(readFileSync(join(qdir, name))), `${label}: ${name}`);
      }
    }
    assert.equal(refused, 5);
  });
}

/**
 * O_DIRECT writes are widened to whole aligned blocks: a qcow2 whose file ends inside a sector (a
 * compressed cluster last) and whose close stores its bitmaps past that end is left padded to the
 * next 512 bytes under -t/-T none|directsync, not under writeback (found by the mutating hunt,
 * campaign 8900000 case 46: commit -b top.qcow2 -t none, 480 bytes shorter than qemu's file).
 */
test('O_DIRECT writes that grow a file to an unaligned end leave it padded as qemu-img leaves it', async () => {
  const made = join(root, 'padded-src');
  mkdirSync(made, { recursive: true });
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', 't.qcow2', '4M'], { cwd: made }).status, 0);
  assert.equal(runQemu('7.2', ['bitmap', '--add', 't.qcow2', 'b0'], { cwd: made }).status, 0);
  assert.equal(runQemu('7.2', ['-c', 'write -c -P 7 1M 64k', 't.qcow2'], { cwd: made }, 'qemu-io').status, 0);
  const image = readFileSync(join(made, 't.qcow2'));
  assert.notEqual(image.length % 512, 0);
  let padded = 0;
  for (const version of VERSIONS) {
    for (const args of [['commit', '-t', 'none', 't.qcow2'], ['check', '-r', 'all', '-T', 'none', 't.qcow2'], ['rebase', '-t', 'directsync', '-u', '-b', '', 't.qcow2'], ['commit', '-t', 'writeback', 't.qcow2']]) {
      const [qdir, idir] = ['q', 'i'].map((side) => {
        const dir = join(root, `padded-${version}-${args.join('')}-${side}`);
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 't.qcow2'), image);
        return dir;
      });
      const qemu = runQemu(version, args, { cwd: qdir });
      const instar = await runInProcess([...args, '--qemu-version', version, '--sandbox=none'], idir);
      const label = `${version}: ${args.join(' ')}`;
      assert.equal(instar.status, qemu.status, `${label}: ${instar.stderr}`);
      const q = readFileSync(join(qdir, 't.qcow2'));
      assert.ok(readFileSync(join(idir, 't.qcow2')).equals(q), `${label}: t.qcow2`);
      if (q.length % 512 === 0) padded++;
    }
  }
  assert.equal(padded, 6);
});

/**
 * The same refusal when commit reopens a raw base for writing under its qcow2 top (-t none): qemu's
 * job fails before it copies anything, after -p's first line; a base with data at its start or of
 * whole 4 KiB blocks takes the commit. Found by trying oVirt's `commit -t none` on a raw base.
 */
test('commit -t none into a raw base: the alignment refusal at the base\'s reopen', async () => {
  const made = join(root, 'base-src');
  mkdirSync(made, { recursive: true });
  const bases: [string, number, string?][] = [['hole.raw', 1049088], ['data.raw', 1049088, 'data'], ['whole.raw', 1052672]];
  for (const [name, size, head] of bases) {
    writeFileSync(join(made, name), head ?? '');
    truncateSync(join(made, name), size);
    const top = `${name}.qcow2`;
    assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-b', name, '-F', 'raw', top], { cwd: made }).status, 0);
    assert.equal(runQemu('7.2', ['-c', 'write -P 7 64k 64k', top], { cwd: made }, 'qemu-io').status, 0);
  }
  let refused = 0;
  for (const version of VERSIONS) {
    for (const [name] of bases) {
      for (const args of [['commit', '-t', 'none', `${name}.qcow2`], ['commit', '-p', '-t', 'directsync', `${name}.qcow2`]]) {
        const [qdir, idir] = ['q', 'i'].map((side) => {
          const dir = join(root, `base-${version}-${args.join('')}-${side}`);
          mkdirSync(dir, { recursive: true });
          // The base made sparse again (a copy of its bytes would start with data).
          const [, size, head] = bases.find(([n]) => n === name)!;
          writeFileSync(join(dir, name), head ?? '');
          truncateSync(join(dir, name), size);
          writeFileSync(join(dir, `${name}.qcow2`), readFileSync(join(made, `${name}.qcow2`)));
          return dir;
        });
        const qemu = runQemu(version, args, { cwd: qdir });
        qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
        const instar = await runInProcess([...args, '--qemu-version', version, '--sandbox=none'], idir);
        const label = `${version}: ${args.join(' ')}`;
        // How often qemu's job prints 0% and 100% follows its timing (test/commit/progress.test.ts).
        assert.deepEqual([instar.status, collapseRepeats(instar.stdout), instar.stderr], [qemu.status, collapseRepeats(qemu.stdout), qemu.stderr], label);
        for (const file of [name, `${name}.qcow2`]) assert.ok(readFileSync(join(idir, file)).equals(readFileSync(join(qdir, file))), `${label}: ${file}`);
        if (qemu.stderr.includes('not a multiple of request alignment')) refused++;
      }
    }
  }
  assert.equal(refused, 4);
});
