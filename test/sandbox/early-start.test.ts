// The CLI starts the sandboxed guest for `info`, `map` and `check` before the command's code has loaded
// (src/cli/early-start.ts): the launch must claim that guest, print what the normal path prints,
// and a guest nobody claims must not keep the CLI from exiting.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu } from '../helpers/oracles.ts';
import { scratchDir } from './helpers.ts';
import { finishEarlyStart, startGuestEarly } from '../../src/cli/early-start.ts';
import { parkedGuestCount } from '../../src/host/sandbox/early.ts';

const EARLY = /debug: sandbox: guest started early/;

describe('early guest start', () => {
  const scratch = scratchDir();
  after(() => scratch.cleanup());
  const base = join(scratch.dir, 'base.qcow2');
  const top = join(scratch.dir, 'top.qcow2');
  const made = [
    runQemu('7.2', ['create', '-q', '-f', 'qcow2', base, '64M']),
    runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]),
  ];

  it('the images were made', () => {
    for (const r of made) assert.equal(r.status, 0, r.stderr);
  });

  for (const version of ['7.2', '10.0'] as const) {
    for (const command of ['info', 'map', 'check']) {
      it(`${command} (${version}): the launch claims the early guest and prints what qemu-img prints`, () => {
        const r = runInstar([command, '--debug', '--qemu-version', version, top]);
        const q = runQemu(version, [command, top]);
        assert.equal(r.status, q.status, r.stderr);
        assert.match(r.stderr, EARLY);
        assert.equal(r.stdout, q.stdout);
      });
    }

    it(`snapshot -l (${version}): the launch claims the early guest and prints what qemu-img prints`, () => {
      const r = runInstar(['snapshot', '--debug', '--qemu-version', version, '-l', top]);
      const q = runQemu(version, ['snapshot', '-l', top]);
      assert.equal(r.status, q.status, r.stderr);
      assert.match(r.stderr, EARLY);
      assert.equal(r.stdout, q.stdout);
    });

    it(`info --backing-chain --output=json (${version}): equal to qemu-img`, () => {
      const args = ['info', '--backing-chain', '--output=json', top];
      const r = runInstar(['--qemu-version', version, ...args]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, runQemu(version, args).stdout);
    });
  }

  it('check -r and snapshot -c open the image read-write: no read-only guest is started early for them, plain check and snapshot -l get one', () => {
    const file = join(scratch.dir, 'early-repair.qcow2');
    copyFileSync(base, file);
    const guestsStarted = (args: string[]) => {
      startGuestEarly(args, process.env, scratch.dir, 'qemu-img');
      try {
        return parkedGuestCount();
      } finally {
        finishEarlyStart();
      }
    };
    assert.equal(guestsStarted(['check', '-r', 'all', file]), 0);
    assert.equal(guestsStarted(['check', file]), 1);
    // snapshot: only -l lists read-only.
    assert.equal(guestsStarted(['snapshot', '-c', 's1', file]), 0);
    assert.equal(guestsStarted(['snapshot', '-l', file]), 1);
  });

  it('check -r all on a clean image: what qemu-img prints', () => {
    const mine = join(scratch.dir, 'repair-mine.qcow2');
    const theirs = join(scratch.dir, 'repair-theirs.qcow2');
    copyFileSync(base, mine);
    copyFileSync(base, theirs);
    const r = runInstar(['check', '--qemu-version', '10.0', '-r', 'all', mine]);
    const q = runQemu('10.0', ['check', '-r', 'all', theirs]);
    assert.equal(r.status, q.status, r.stderr);
    assert.equal(r.stdout, q.stdout);
  });

  it('a guest nobody claims is ended: the CLI exits with the command error at once', () => {
    // 7.2 checks --output after opening nothing: the early guest is started and never used.
    const args = ['info', '--output=yaml', top];
    const r = runInstar(['--qemu-version', '7.2', '--debug', ...args], { timeoutMs: 20_000 });
    const q = runQemu('7.2', args);
    assert.equal(r.status, q.status, r.stderr);
    assert.equal(r.signal, null);
    assert.doesNotMatch(r.stderr, EARLY);
    assert.ok(r.stderr.endsWith(q.stderr), r.stderr);
  });

  it('a file that does not open: no early guest, the same error as qemu-img', () => {
    const missing = join(scratch.dir, 'missing.qcow2');
    const r = runInstar(['info', '--qemu-version', '10.0', missing]);
    const q = runQemu('10.0', ['info', missing]);
    assert.equal(r.status, q.status);
    assert.equal(r.stderr, q.stderr);
  });

  it('--sandbox=none starts no guest', () => {
    const r = runInstar(['info', '--debug', '--sandbox=none', top]);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /sandbox:/);
  });
});
