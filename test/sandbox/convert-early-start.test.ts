// convert's early start (src/cli/early-start.ts): for a new raw target the CLI opens the sources,
// creates the target and starts the copy guests before the command's code loads. The launches
// must claim those guests and write what qemu-img writes; whatever the command does not use must
// be undone: no target left for a command qemu-img refuses, no guest left running, an existing
// target never touched by the early path.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, VERSIONS } from '../helpers/oracles.ts';
import { scratchDir } from './helpers.ts';
import { startEarlyGuest, discardEarlyGuests } from '../../src/host/sandbox/early.ts';
import { runOp } from '../../src/host/sandbox/run.ts';

const EARLY = /debug: sandbox: guest started early/g;
const GUESTS = Math.min(2, availableParallelism());

const noDebug = (stderr: string) => stderr.split('\n').filter((l) => !l.includes(': debug: ')).join('\n');

/** Processes (guests, say) that still hold a file under `dir` open, after up to a second. */
async function holdersOf(dir: string): Promise<string[]> {
  let holders: string[] = [];
  for (let tries = 0; tries < 20; tries++) {
    holders = [];
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid)) {
      let fds: string[];
      try {
        fds = readdirSync(`/proc/${pid}/fd`);
      } catch {
        continue;
      }
      for (const fd of fds) {
        try {
          if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(dir + '/')) holders.push(pid);
        } catch {
          /* gone meanwhile */
        }
      }
    }
    if (holders.length === 0) return [];
    await new Promise((r) => setTimeout(r, 50));
  }
  return holders;
}

describe('convert: early start of the copy guests', () => {
  const scratch = scratchDir();
  after(() => scratch.cleanup());
  const dir = scratch.dir;
  const at = (name: string) => join(dir, name);
  const made = [
    runQemu('10.0', ['create', '-q', '-f', 'qcow2', at('s.qcow2'), '1M']),
    runQemu('10.0', ['-c', 'write -P 7 0 64k', '-c', 'write -P 9 512k 4k', at('s.qcow2')], {}, 'qemu-io'),
    runQemu('10.0', ['create', '-q', '-f', 'qcow2', at('base.qcow2'), '2M']),
    runQemu('10.0', ['-c', 'write -P 3 1M 64k', at('base.qcow2')], {}, 'qemu-io'),
    runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', at('top.qcow2')]),
    runQemu('10.0', ['-c', 'write -P 5 0 4k', at('top.qcow2')], {}, 'qemu-io'),
  ];
  made.push(runQemu('10.0', ['create', '-q', '-f', 'qcow2', at('t.qcow2'), '192k']));
  made.push(runQemu('10.0', ['-c', 'write -P 8 64k 64k', at('t.qcow2')], {}, 'qemu-io'));
  writeFileSync(at('r.raw'), Buffer.alloc(96 * 1024, 0x41));

  it('the images were made', () => {
    for (const r of made) assert.equal(r.status, 0, r.stderr);
  });

  /** instar and qemu-img convert the same command line into their own new targets; compared. */
  const compare = (version: (typeof VERSIONS)[number], opts: string[], sources: string[], extra: string[] = []) => {
    const mine = at(`mine-${version}.raw`);
    const theirs = at(`theirs-${version}.raw`);
    rmSync(mine, { force: true });
    rmSync(theirs, { force: true });
    const q = runQemu(version, ['convert', ...opts, ...sources, theirs]);
    const r = runInstar(['convert', ...extra, '--qemu-version', version, ...opts, ...sources, mine]);
    assert.equal(r.status, q.status, r.stderr);
    assert.equal(r.stdout, q.stdout);
    assert.equal(noDebug(r.stderr), q.stderr.replaceAll(oracle(version), 'qemu-img'));
    assert.ok(readFileSync(mine).equals(readFileSync(theirs)), 'the outputs differ');
    return r;
  };

  for (const version of VERSIONS) {
    it(`qcow2 -> raw (${version}): every copy guest is claimed, output and messages equal qemu-img's`, () => {
      const r = compare(version, ['-f', 'qcow2', '-O', 'raw'], [at('s.qcow2')], ['--debug']);
      assert.equal(r.stderr.match(EARLY)?.length, GUESTS, r.stderr);
    });

    it(`two sources, no -f, -S 0 -t none (${version}): claimed, equal to qemu-img`, () => {
      const r = compare(version, ['-S', '0', '-t', 'none'], [at('s.qcow2'), at('t.qcow2')], ['--debug']);
      assert.equal(r.stderr.match(EARLY)?.length, GUESTS, r.stderr);
    });

    it(`a backing chain (${version}): the first round is claimed, the next launches are normal, equal to qemu-img`, () => {
      const r = compare(version, ['-O', 'raw'], [at('top.qcow2')], ['--debug']);
      assert.equal(r.stderr.match(EARLY)?.length, GUESTS, r.stderr);
    });
  }

  it('without --debug: the same bytes on stdout and stderr as qemu-img', () => {
    compare('10.0', ['-q'], [at('s.qcow2')]);
  });

  it('guests started for other fds are not claimed; the launch starts its own, and the parked ones are ended', async () => {
    const src = openSync(at('s.qcow2'), 'r');
    const other = openSync(at('s.qcow2'), 'r');
    const out = openSync(at('miss.raw'), 'wx');
    try {
      assert.equal(startEarlyGuest('convert', [{ fd: other, role: 'input', writable: false }, { fd: out, role: 'output', writable: true }], { mode: 'auto' }, 2), 2);
      const lines: string[] = [];
      const options = { phase: 'open-copy', sources: [{ index: 0, fileName: 's.qcow2' }], sparseSize: 4096, targetIsZero: true, worker: 0, workers: 1 };
      const value = await runOp('convert', options, [{ fd: src, role: 'input', writable: false }, { fd: out, role: 'output', writable: true }], { mode: 'auto', debug: (l) => lines.push(l) });
      assert.deepEqual((value as { sizes: number[] }).sizes, [1024 * 1024]);
      assert.equal(lines.filter((l) => l.includes('guest started early')).length, 0, 'no parked guest claimed');
      discardEarlyGuests();
    } finally {
      closeSync(src);
      closeSync(other);
      closeSync(out);
    }
    const q = at('miss-q.raw');
    assert.equal(runQemu('10.0', ['convert', '-O', 'raw', at('s.qcow2'), q]).status, 0);
    assert.ok(readFileSync(at('miss.raw')).equals(readFileSync(q)));
    assert.deepEqual(await holdersOf(dir), [], 'parked guests still hold files');
  });

  it('a parked guest is not claimed through an fd number that now names another file', async () => {
    const src = openSync(at('s.qcow2'), 'r');
    let out = openSync(at('stale.raw'), 'wx');
    const number = out;
    try {
      assert.equal(startEarlyGuest('convert', [{ fd: src, role: 'input', writable: false }, { fd: out, role: 'output', writable: true }], { mode: 'auto' }, 1), 1);
      // The early target removed and another file opened in its place, under the same number.
      closeSync(out);
      rmSync(at('stale.raw'));
      out = openSync(at('fresh.raw'), 'wx');
      assert.equal(out, number, 'the fd number was not reused; the test proves nothing');
      const lines: string[] = [];
      const options = { phase: 'open-copy', sources: [{ index: 0, fileName: 's.qcow2' }], sparseSize: 4096, targetIsZero: true, worker: 0, workers: 1 };
      await runOp('convert', options, [{ fd: src, role: 'input', writable: false }, { fd: out, role: 'output', writable: true }], { mode: 'auto', debug: (l) => lines.push(l) });
      assert.equal(lines.filter((l) => l.includes('guest started early')).length, 0, 'the stale guest was claimed');
      discardEarlyGuests();
    } finally {
      closeSync(src);
      closeSync(out);
    }
    const q = at('fresh-q.raw');
    assert.equal(runQemu('10.0', ['convert', '-O', 'raw', at('s.qcow2'), q]).status, 0);
    assert.ok(readFileSync(at('fresh.raw')).equals(readFileSync(q)), 'the copy went to the old file');
  });

  // Command lines the early path prepares (a new raw target, sources that open) but the command
  // then refuses, or the copy fails: the target goes, as qemu-img never made it.
  const failures: [string, string[]][] = [
    ['-S not a multiple of 512', ['-S', '100', 's.qcow2', 'gone.raw']],
    ['-S not a number', ['-S', 'abc', 's.qcow2', 'gone.raw']],
    ['a source that is not what -f says', ['-f', 'qcow2', 'r.raw', 'gone.raw']],
    ['a source whose backing file is missing', ['nobase.qcow2', 'gone.raw']],
  ];
  for (const [name, args] of failures) {
    for (const version of VERSIONS) {
      it(`${name} (${version}): qemu-img's message, no target left, no guest left running`, async () => {
        if (name.includes('backing')) {
          assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'nowhere.qcow2', '-F', 'qcow2', at('nobase.qcow2'), '1M']).status, 0);
        }
        const q = runQemu(version, ['convert', ...args], { cwd: dir });
        assert.equal(existsSync(at('gone.raw')), false, 'qemu-img left a target');
        const r = runInstar(['convert', '--debug', '--qemu-version', version, ...args], { cwd: dir, timeoutMs: 20_000 });
        assert.equal(r.signal, null);
        assert.equal(r.status, q.status);
        assert.equal(noDebug(r.stderr), q.stderr.replaceAll(oracle(version), 'qemu-img'));
        assert.equal(existsSync(at('gone.raw')), false, 'instar left a target');
        assert.deepEqual(await holdersOf(dir), [], 'guests still hold files');
      });
    }
  }

  it('the refused command line really was prepared early (so the tests above cover the undo)', () => {
    // The same command line with a valid -S: the early start is what makes the guests.
    const r = runInstar(['convert', '--debug', '-S', '512', 's.qcow2', 'prepared.raw'], { cwd: dir });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.match(EARLY)?.length, GUESTS, r.stderr);
  });

  it('an existing target is left to the command: no early start; a refused command leaves it as it was', () => {
    const target = at('existing.raw');
    writeFileSync(target, 'the user had this');
    const bad = runInstar(['convert', '--debug', '-S', '100', 's.qcow2', target]);
    assert.equal(bad.status, 1);
    assert.equal(readFileSync(target, 'utf8'), 'the user had this');
    const good = runInstar(['convert', '--debug', '-O', 'raw', at('s.qcow2'), target]);
    assert.equal(good.status, 0, good.stderr);
    assert.doesNotMatch(good.stderr, EARLY);
    const q = at('existing-q.raw');
    assert.equal(runQemu('10.0', ['convert', '-O', 'raw', at('s.qcow2'), q]).status, 0);
    assert.ok(readFileSync(target).equals(readFileSync(q)));
  });

  it('--sandbox=none starts nothing early and converts in-process', () => {
    const target = at('none.raw');
    const r = runInstar(['convert', '--debug', '--sandbox=none', '-O', 'raw', at('s.qcow2'), target]);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /sandbox:/);
    const q = at('none-q.raw');
    assert.equal(runQemu('10.0', ['convert', '-O', 'raw', at('s.qcow2'), q]).status, 0);
    assert.ok(readFileSync(target).equals(readFileSync(q)));
  });

  it('a long option one profile lacks (--source-format in 7.2): no early start while the profile is unknown', () => {
    const target = at('long.raw');
    const r = runInstar(['convert', '--debug', '--source-format', 'qcow2', at('s.qcow2'), target], { env: { INSTAR_QEMU_VERSION: '' } });
    // Which qemu-img is installed decides whether the option exists; either way nothing started early.
    assert.doesNotMatch(r.stderr, EARLY);
    if (r.status !== 0) assert.equal(existsSync(target), false);
  });
});
