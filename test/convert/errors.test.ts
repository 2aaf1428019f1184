// convert's failures: qemu-img's wording and exit status for each profile, compared with both
// oracles, and the output file left as qemu leaves it (never created when qemu does not create it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { oracle, runInstar, runQemu, VERSIONS, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { tiered } from '../helpers/long.ts';
import { qemu, qemuIo, tempDir } from './helpers.ts';
import { runInProcessWith } from './in-process-cli.ts';
import { SHORT_TIER_IN_PROCESS } from '../helpers/in-process.ts';

/**
 * instar's runs compared with qemu-img `v`: the built CLI (sandboxed) under each version in the
 * long tier (and with INSTAR_TEST_CLI=1). The short tier launches it under 10.0 only and runs the
 * command line in this process (--sandbox=none, no launch) under both versions: the version
 * changes only what the host words, the same host code in both modes, which the in-process runs
 * check under both; the sandboxed run adds the guests' transport, which no version changes.
 * `check` takes each run's result as it ends; `reset` puts back what the target held before each
 * run after the first.
 */
async function eachInstarRun(v: OracleVersion, args: string[], cwd: string, check: (mode: string, mine: RunResult) => void, reset: () => void = () => undefined): Promise<void> {
  const env = { INSTAR_QEMU_VERSION: v };
  const runs: [string, () => RunResult | Promise<RunResult>][] = [];
  if (!SHORT_TIER_IN_PROCESS || v === '10.0') runs.push(['sandboxed', () => runInstar(args, { cwd, env })]);
  if (SHORT_TIER_IN_PROCESS) runs.push(['in-process', () => runInProcessWith(args, cwd, env)]);
  for (const [i, [mode, run]] of runs.entries()) {
    if (i > 0) reset();
    check(mode, await run());
  }
}

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'a.qcow2'), '4M']);
  qemuIo(join(dir, 'a.qcow2'), ['write -P 1 0 64k']);
  qemu(['snapshot', '-c', 'snap', join(dir, 'a.qcow2')]);
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '1M']);
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(dir, 'top.qcow2')]);
  rmSync(join(dir, 'base.qcow2'));
  // A backing file named like the target: it must still be missing when the source is opened.
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'self.raw', '-F', 'raw', '-u', join(dir, 'names-target.qcow2'), '1M']);
  // A chain whose bottom names a data file relative to the cwd (qemu opens it so): missing from d/,
  // two backing links down; and a chain whose backing file is missing two links down.
  // qemu-img create makes the data file relative to its own cwd (dir here, not the caller's),
  // and the data file is then removed: these chains name one that is missing.
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=df0.data', 'df0.qcow2', '1M'], { cwd: dir }).status, 0);
  rmSync(join(dir, 'df0.data'));
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'df0.qcow2', '-F', 'qcow2', join(dir, 'df1.qcow2')]);
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'df1.qcow2', '-F', 'qcow2', join(dir, 'df2.qcow2')]);
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'gone0.qcow2'), '1M']);
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'gone0.qcow2', '-F', 'qcow2', join(dir, 'gone1.qcow2')]);
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'gone1.qcow2', '-F', 'qcow2', join(dir, 'gone2.qcow2')]);
  rmSync(join(dir, 'gone0.qcow2'));
  writeFileSync(join(dir, 'r.raw'), Buffer.alloc(65536, 7));
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'luks', '--object', 'secret,id=s0,data=pw', '-o', 'key-secret=s0,iter-time=10', 'v.luks', '1M'], { cwd: dir }).status, 0);
  mkdirSync(join(dir, 'd'));
  // qemu 10.0's fixed VHDX of this size ends before its last block (sparse: 1 MiB on disk), which
  // the BAT check of both versions' open reports (error_report) before the open fails.
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=67108864,log_size=3145728,subformat=fixed,block_state_zero=off', 'short.vhdx', '20336684721'], { cwd: dir }).status, 0);
});
after(() => cleanup());

const luksSource = ['--object', 'secret,id=s0,data=pw', '--image-opts'];
const cases: [string, string[], (() => void)?][] = [
  ['missing source', ['nope.qcow2', 'o.raw']],
  ['missing backing file', ['top.qcow2', 'o.raw']],
  ['missing backing file two links down', ['gone2.qcow2', 'o.raw']],
  ['missing data file of a backing file two links down (-O qcow2, a second source first)', ['-O', 'qcow2', 'a.qcow2', 'd/../df2.qcow2', 'o.qcow2']],
  ['backing file named like the (missing) target', ['names-target.qcow2', 'self.raw']],
  ['target in a missing directory', ['a.qcow2', 'nodir/o.raw']],
  ['target is a directory', ['a.qcow2', 'd']],
  ['-n with a missing target', ['-n', 'a.qcow2', 'o.raw']],
  ['-n with a smaller target', ['-n', 'a.qcow2', 'small.raw'], () => { writeFileSync(join(dir, 'small.raw'), ''); truncateSync(join(dir, 'small.raw'), 65536); }],
  ['-S not a multiple of 512', ['-S', '100', 'a.qcow2', 'o.raw']],
  ['-S above 16 MiB', ['-S', '17M', 'a.qcow2', 'o.raw']],
  ['-S not a number', ['-S', 'abc', 'a.qcow2', 'o.raw']],
  ['-S negative', ['-S', '-1', 'a.qcow2', 'o.raw']],
  ['-S past INT64_MAX (cvtnum\'s range message alone)', ['-S', '99999999999999999999', 'a.qcow2', 'o.raw']],
  ['-S 8E (in range of nothing: cvtnum\'s message, not the multiples one)', ['-S', '8E', 'a.qcow2', 'o.raw']],
  ['-S hex with a fraction', ['-S', '0x1.5k', 'a.qcow2', 'o.raw']],
  ['-m 0x0 (hex, out of range)', ['-m', '0x0', 'a.qcow2', 'o.raw']],
  ['-m 08 (not octal)', ['-m', '08', 'a.qcow2', 'o.raw']],
  ['-O raw -o an option raw does not have', ['-O', 'raw', '-o', 'cluster_size=4k', 'a.qcow2', 'o.raw']],
  ['-O raw -o a bad option before -c', ['-c', '-o', 'bogus=1', 'a.qcow2', 'o.raw']],
  ['-O raw -B before -c', ['-c', '-B', 'x', 'a.qcow2', 'o.raw']],
  ['-O raw -o a bad bool', ['-o', 'nocow=maybe', 'a.qcow2', 'o.raw']],
  ['-O raw -o preallocation=bogus (nothing created)', ['-o', 'preallocation=bogus', 'a.qcow2', 'o.raw']],
  ['-O raw -o preallocation=metadata (the target created, left empty)', ['-o', 'preallocation=metadata', 'a.qcow2', 'o.raw']],
  ['-l with a missing snapshot', ['-l', 'nosnap', 'a.qcow2', 'o.raw']],
  ['-l snapshot.name= missing', ['-l', 'snapshot.name=x', 'a.qcow2', 'o.raw']],
  ['-l id and name that do not match together', ['-l', 'snapshot.id=1,snapshot.name=other', 'a.qcow2', 'o.raw']],
  ['-l on a raw source', ['-l', 'snap', '-f', 'raw', 'r.raw', 'o.raw']],
  ['-l with an unknown key', ['-l', 'snapshot.foo=1', 'a.qcow2', 'o.raw']],
  ['-l with two sources', ['-l', 'snap', 'a.qcow2', 'a.qcow2', 'o.raw']],
  ['-O unknown', ['-O', 'foo', 'a.qcow2', 'o.raw']],
  ['-c to raw', ['-c', 'a.qcow2', 'o.raw']],
  ['-B to raw', ['-B', 'x', 'a.qcow2', 'o.raw']],
  ['--target-is-zero without -n', ['--target-is-zero', 'a.qcow2', 'o.raw']],
  ['no target', ['a.qcow2']],
  ['no arguments', []],
  ['-s is not an option', ['-s', 'snap', 'a.qcow2', 'o.raw']],
  ['-f naming another format', ['-f', 'qcow2', 'r.raw', 'o.raw']],
  ['-f unknown', ['-f', 'foo', 'a.qcow2', 'o.raw']],
  ['-T unknown cache mode', ['-T', 'bogus', 'a.qcow2', 'o.raw']],
  ['-T unknown before a missing source', ['-T', 'bogus', 'nope.qcow2', 'o.raw']],
  ['-t unknown cache mode (target created, left)', ['-t', 'bogus', 'a.qcow2', 'o.raw']],
  ['-t unknown with -n and a missing target', ['-t', 'bogus', '-n', 'a.qcow2', 'o.raw']],
  ['-t unknown after an unknown -O', ['-t', 'bogus', '-O', 'foo', 'a.qcow2', 'o.raw']],
  ['-n -c into a smaller qcow2 (the size check before instar\'s own refusal)', ['-n', '-c', '-O', 'qcow2', 'a.qcow2', 'small.qcow2'], () => qemu(['create', '-q', '-f', 'qcow2', join(dir, 'small.qcow2'), '2M'])],
  ['-n -c into a smaller qcow', ['-n', '-c', '-O', 'qcow', 'a.qcow2', 'small.qcow'], () => qemu(['create', '-q', '-f', 'qcow', join(dir, 'small.qcow'), '2M'])],
  ['a VHDX whose last block is past its end (the driver\'s report first)', ['-f', 'vhdx', 'short.vhdx', 'o.raw']],
  ['the same, -p, into qcow2', ['-p', '-O', 'qcow2', 'short.vhdx', 'o.qcow2']],
  // qemu opens a new image's backing file after the create, with no key-secret for a LUKS one;
  // a QED image with one-cluster tables fails its own open first (qemu's create makes it so).
  ['-o backing_file of a LUKS volume (no key-secret at the open after create)', [...luksSource, '-o', 'backing_file=v.luks,backing_fmt=luks', '-O', 'qcow2', 'driver=luks,key-secret=s0,file.filename=v.luks', 'o.qcow2']],
  ['the same into QED with table_size=1 (its own open fails first)', [...luksSource, '-o', 'table_size=1,backing_file=v.luks,backing_fmt=luks', '-O', 'qed', 'driver=luks,key-secret=s0,file.filename=v.luks', 'o.qed']],
];

// Long tier only: cases whose message and check a short-tier case meets too. Two links down (the
// backing-links test below converts gone2.qcow2 too), -S above 16 MiB (the multiples check, as 100),
// -S negative (cvtnum's suffix message, as abc), -B to raw (as -B before -c), -T unknown (as before a
// missing source), -O unknown (as after -t unknown), and -n -c into a smaller qcow (the size check,
// as into a smaller qcow2).
const LONG_ONLY = new Set(['missing backing file two links down', '-S above 16 MiB', '-S negative', '-B to raw', '-T unknown cache mode', '-O unknown', '-n -c into a smaller qcow']);
for (const [name, args, setup] of tiered(cases, ([name]) => !LONG_ONLY.has(name))) {
  for (const v of VERSIONS) {
    test(`convert error (${v}): ${name}`, async () => {
      setup?.();
      const target = join(dir, args.at(-1) ?? 'none');
      const existed = existsSync(target);
      const theirs = runQemu(v, ['convert', ...args], { cwd: dir });
      const theirsLeft = existsSync(target);
      const reset = () => {
        if (!existed) rmSync(target, { force: true, recursive: false });
      };
      reset();
      assert.equal(theirs.status, 1, theirs.stderr);
      await eachInstarRun(v, ['convert', ...args], dir, (mode, mine) => {
        assert.equal(mine.status, 1, mode);
        assert.equal(mine.stderr, theirs.stderr.replaceAll(oracle(v), 'qemu-img'), mode);
        assert.equal(mine.stdout, theirs.stdout, mode);
        assert.equal(existsSync(target), theirsLeft, `${mode}: the target is left as qemu-img leaves it`);
      }, reset);
    });
  }
}

test('-S read as qemu\'s cvtnum reads it (hex, a plus sign, a hex number with a suffix warned, spaces first), -m as a C integer of base 0, raw\'s -o options', async () => {
  const options = [['-S', '0x200'], ['-S', '+512'], ['-S', '0x1k'], ['-S', ' 4k'], ['-S', '0X1000'], ['-m', '0x10'], ['-m', '017'], ['-m', ' +4'],
    ['-o', 'nocow=on,size=1'], ['-o', 'extent_size_hint=1M,preallocation=off']];
  for (const option of options) {
    for (const v of VERSIONS) {
      const args = ['convert', ...option, '-O', 'raw', 'a.qcow2', 'o.raw'];
      const theirs = runQemu(v, args, { cwd: dir });
      const what = `${option.join(' ')} (${v})`;
      // 10.0 refuses a hex number with a suffix; everything else converts.
      assert.equal(theirs.status, option[1] === '0x1k' && v === '10.0' ? 1 : 0, `${what}: ${theirs.stderr}`);
      const theirBytes = theirs.status === 0 ? readFileSync(join(dir, 'o.raw')) : undefined;
      rmSync(join(dir, 'o.raw'), { force: true });
      await eachInstarRun(v, args, dir, (mode, mine) => {
        assert.deepEqual([mine.status, mine.stdout, mine.stderr], [theirs.status, theirs.stdout, theirs.stderr.replaceAll(oracle(v), 'qemu-img')], `${what} ${mode}`);
        if (theirBytes) assert.ok(readFileSync(join(dir, 'o.raw')).equals(theirBytes), `${what} ${mode}`);
        rmSync(join(dir, 'o.raw'), { force: true });
      });
    }
  }
});

test('a file named two backing links down that cannot be opened: qemu\'s "Could not open backing file: " per link, in convert, dd, map, compare and measure', async () => {
  const cwd = join(dir, 'd');
  for (const image of ['../df1.qcow2', '../df2.qcow2', '../gone2.qcow2']) {
    for (const args of [['convert', '-O', 'raw', image, 'o.raw'], ['dd', `if=${image}`, 'of=o.raw'], ['map', image], ['compare', '-f', 'raw', '../r.raw', image], ['measure', '-O', 'qcow2', image]]) {
      for (const v of VERSIONS) {
        const theirs = runQemu(v, args, { cwd });
        rmSync(join(cwd, 'o.raw'), { force: true });
        assert.match(theirs.stderr, /Could not open backing file: Could not open /, args.join(' '));
        await eachInstarRun(v, ['--allow-path', dir, ...args], cwd, (mode, mine) => {
          rmSync(join(cwd, 'o.raw'), { force: true });
          assert.deepEqual([mine.status, mine.stdout, mine.stderr], [theirs.status, theirs.stdout, theirs.stderr.replaceAll(oracle(v), 'qemu-img')], `${args.join(' ')} (${v}) ${mode}`);
        });
      }
    }
  }
});

test('-l snapshot.name=/snapshot.id= with two sources: qemu loads the snapshot into the first one only (the plain -l NAME is refused)', async () => {
  for (const [l, sources] of [['snapshot.name=snap', ['a.qcow2', 'r.raw']], ['snapshot.id=1', ['a.qcow2', 'a.qcow2']], ['snapshot.name=snap', ['df0.qcow2', 'a.qcow2']]] as const) {
    for (const v of VERSIONS) {
      const args = ['convert', '-l', l, ...sources, '-O', 'raw', 'o.raw'];
      const theirs = runQemu(v, args, { cwd: dir });
      const theirBytes = theirs.status === 0 ? readFileSync(join(dir, 'o.raw')) : undefined;
      rmSync(join(dir, 'o.raw'), { force: true });
      await eachInstarRun(v, ['--unsafe-quirks', ...args], dir, (mode, mine) => {
        const what = `${args.join(' ')} (${v}) ${mode}`;
        assert.deepEqual([mine.status, mine.stdout, mine.stderr], [theirs.status, theirs.stdout, theirs.stderr.replaceAll(oracle(v), 'qemu-img')], what);
        if (theirBytes) assert.ok(readFileSync(join(dir, 'o.raw')).equals(theirBytes), what);
        rmSync(join(dir, 'o.raw'), { force: true });
      });
    }
  }
});

/** Whether the file system under `dir` refuses a file of `size` bytes (ext4: 16 TiB; tmpfs, xfs take it). */
function refusesSize(size: number): boolean {
  const probe = join(dir, 'size-probe');
  const fd = openSync(probe, 'w');
  try {
    ftruncateSync(fd, size);
    return false;
  } catch {
    return true;
  } finally {
    closeSync(fd);
    rmSync(probe);
  }
}

test('a disk larger than the file system allows: qemu\'s "Could not resize file", the empty target stays', (t) => {
  const size = 20 * 1024 ** 4;
  if (!refusesSize(size)) return t.skip('this file system takes 20 TiB files');
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'huge.qcow2'), '20T']);
  // A new target (one round of guests) and an existing one (the open guest first), both sandboxed and in-process.
  for (const v of VERSIONS) {
    for (const [sandbox, existing] of [['auto', false], ['none', false], ['auto', true]] as const) {
      const target = join(dir, 'huge.raw');
      if (existing) writeFileSync(target, 'old');
      const theirs = runQemu(v, ['convert', 'huge.qcow2', 'huge.raw'], { cwd: dir });
      assert.equal(statSync(target).size, 0);
      if (existing) writeFileSync(target, 'old');
      else rmSync(target);
      const mine = runInstar(['convert', 'huge.qcow2', 'huge.raw'], { cwd: dir, env: { INSTAR_QEMU_VERSION: v, INSTAR_SANDBOX: sandbox } });
      assert.equal(mine.status, theirs.status);
      assert.equal(mine.stderr, theirs.stderr.replaceAll(oracle(v), 'qemu-img'));
      assert.equal(existsSync(target) && statSync(target).size, 0, 'the target stays, empty, as qemu leaves it');
      rmSync(target);
    }
  }
});

test('convert -O dmg (a format qemu cannot create): qemu-img\'s message, nothing created', () => {
  for (const v of VERSIONS) {
    const theirs = runQemu(v, ['convert', '-O', 'dmg', 'a.qcow2', 'q.dmg'], { cwd: dir });
    const mine = runInstar(['convert', '-O', 'dmg', 'a.qcow2', 'i.dmg', '--qemu-version', v], { cwd: dir });
    assert.equal(mine.status, theirs.status);
    assert.equal(mine.stderr.replace('i.dmg', 'q.dmg'), theirs.stderr.replaceAll(oracle(v), 'qemu-img'));
    assert.equal(existsSync(join(dir, 'i.dmg')), existsSync(join(dir, 'q.dmg')));
  }
});

test('a read error mid-copy removes the output instar created', () => {
  // A compressed image whose last compressed clusters are overwritten with junk.
  const src = join(dir, 'broken.qcow2');
  writeFileSync(join(dir, 'content.raw'), Buffer.alloc(4 * 1024 * 1024, 0x5a));
  qemu(['convert', '-O', 'qcow2', '-c', '-f', 'raw', join(dir, 'content.raw'), src]);
  // qemu appends compressed data after the metadata: junk over the file's tail breaks the last clusters.
  const size = statSync(src).size;
  const h = openSync(src, 'r+');
  writeSync(h, Buffer.alloc(1024, 0xff), 0, 1024, size - 1024);
  closeSync(h);
  for (const v of VERSIONS) assert.notEqual(runQemu(v, ['convert', src, join(dir, `q${v}.raw`)]).status, 0, 'the oracle reads the damage too');
  const out = join(dir, 'broken-out.raw');
  const r = runInstar(['convert', src, out], { cwd: dir });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^qemu-img: error while reading at byte \d+: Input\/output error\n$/);
  assert.equal(existsSync(out), false, 'no partial output left behind');
});
