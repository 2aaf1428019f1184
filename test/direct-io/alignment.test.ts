// A writable open with cache=none/directsync of a raw (or file) image whose start is a hole: qemu's
// O_DIRECT alignment probe falls back to 4096 there, and a size it does not divide is refused at
// the open ("Cannot get 'write' permission without 'resize': ..."), for commit, rebase, amend
// and check -r alike (found by the mutating hunt, campaign 8484 case 23: instar went on and said
// "Did not find ... in the backing chain"). Data at the start, a size of whole 4 KiB blocks or a
// cached mode open as before. Both oracles and instar on twin directories of sparse files.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, oracle, runInstar, runQemu } from '../helpers/oracles.ts';

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
  test(`writable O_DIRECT opens of raw images: qemu-img ${version}'s alignment refusal`, () => {
    let refused = 0;
    CASES.forEach((args, n) => {
      const [qdir, idir] = twin(`${version}-${n}`);
      const qemu = runQemu(version, args, { cwd: qdir });
      qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
      const instar = runInstar([...args, '--qemu-version', version, '--sandbox=none'], { cwd: idir });
      const label = `${version}: ${args.join(' ')}`;
      assert.equal(instar.stderr, qemu.stderr, label);
      assert.equal(instar.stdout, qemu.stdout, label);
      assert.equal(instar.status, qemu.status, label);
      if (qemu.stderr.includes('not a multiple of request alignment')) refused++;
      for (const [name] of FILES.filter(([, size]) => size < 2 ** 30)) {
        assert.ok(readFileSync(join(idir, name)).equals(readFileSync(join(qdir, name))), `${label}: ${name}`);
      }
    });
    assert.equal(refused, 5);
  });
}
