// Argument errors, byte for byte against both oracles: stderr, stdout and exit status.
// Every case fails inside qemu-img's option parsing (or its argument-count checks), before any
// file is opened, in both 7.2 and 10.0. The oracle runs with argv[0] = 'qemu-img', which is what
// instar prints under its qemu-img alias.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { oracle, INSTAR_ALIAS, VERSIONS, type OracleVersion } from '../helpers/oracles.ts';
import { LONG } from '../helpers/long.ts';
import { runInProcess } from '../helpers/in-process.ts';

interface Outcome {
  stdout: string;
  stderr: string;
  status: number | null;
}

function run(file: string, args: string[], env: Record<string, string>, argv0?: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { argv0, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, status });
    });
  });
}

function runOracle(version: OracleVersion, args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  return run(oracle(version), args, env, 'qemu-img');
}

/** instar under its qemu-img alias (what runInstar does, asynchronously so cases overlap). */
function runInstarAsync(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  return run(process.execPath, [INSTAR_ALIAS, ...args], env);
}

/** instar's command line run in this process, as the alias runs it (argv[1] 'qemu-img'): no launch. */
const runInstarInProcess = (args: string[], env: Record<string, string> = {}): Promise<Outcome> => runInProcess(args, process.cwd(), { ...process.env, ...env });

interface Case {
  version: OracleVersion;
  args: string[];
  env?: Record<string, string>;
  /** Main-level cases take the profile from the environment (see compare). */
  viaEnv?: boolean;
}

/** `launched`: through the built CLI as well as in-process (else in-process only); the long tier launches only. */
async function compareOne(c: Case, launched: boolean): Promise<void> {
  const env = c.env ?? {};
  // The profile goes before the subcommand (a main-level option) so that it moves nothing the
  // error text depends on; main-level cases take it from the environment instead.
  const ways: [string, typeof runInstarAsync][] = [];
  if (launched) ways.push(['', runInstarAsync]);
  if (!LONG) ways.push([' (in-process)', runInstarInProcess]);
  const [expected, ...actuals] = await Promise.all([
    runOracle(c.version, c.args, env),
    ...ways.map(([, instar]) => (c.viaEnv
      ? instar(c.args, { ...env, INSTAR_QEMU_VERSION: c.version })
      : instar(['--qemu-version', c.version, ...c.args], env))),
  ]);
  for (const [k, actual] of actuals.entries()) {
    const label = `${c.version}: qemu-img ${c.args.join(' ')}${ways[k][0]}`;
    assert.notEqual(expected.status, 0, `${label}: the oracle accepted it; not an argument error case`);
    assert.equal(actual.stderr, expected.stderr, label);
    assert.equal(actual.stdout, expected.stdout, label);
    assert.equal(actual.status, expected.status, label);
  }
}

/**
 * Compares all cases, a few at a time. An instar launch costs ~0.3 s of CPU, and the parser is the
 * same code in this process: the short tier runs every case's instar side in-process (every case
 * on every version: all of the parser's answers), and every eighth case through the built CLI under
 * its qemu-img alias too (the launch: argv[0], stream flushing, exit status). The long tier
 * launches the CLI for every case, as before.
 */
async function compareAll(cases: Case[]): Promise<void> {
  assert.ok(cases.length > 0);
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const i = next++;
      await compareOne(cases[i], LONG || i % 8 === 0);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
}

/** Patterns tried on every subcommand (a and b are names of files that do not exist). */
const PATTERNS: string[][] = [
  ['--zzz', 'a', 'b'], // unknown long option
  ['-Z', 'a', 'b'], // unknown short option
  ['-f'], // missing argument (unknown option for 7.2's snapshot)
  ['--=x', 'a'], // empty name: ambiguous among all (10.0), unrecognized (7.2)
  ['-qz', 'a', 'b'], // bad letter ending a cluster
  ['a', '-zq', 'b'], // bad letter inside a cluster, after a positional
  ['--help=1', 'a', 'b'], // flag given a value
  ['--object'], // missing argument of a long option
  ['--image-opts=1', 'a', 'b'],
  ['-pqz'],
  ['--s', 'a', 'b'], // ambiguous in most tables
  ['--c', 'a', 'b'],
  ['--f=x', 'a', 'b'],
  ['--b', 'a', 'b'],
  ['--o', 'a', 'b'],
];

/** Patterns that parse fine for a subcommand in one of the versions (an error comes later). */
const PARSES: Record<string, string[]> = {
  amend: ['--o a b', '--c a b'],
  bench: ['--o a b', '--s a b', '--b a b'],
  bitmap: ['--o a b', '--c a b'],
  check: ['--c a b'],
  commit: ['--o a b', '--b a b', '--c a b', '--f=x a b'],
  compare: ['--o a b', '--s a b', '--b a b', '--c a b'],
  convert: ['--o a b', '--b a b', '--c a b'],
  create: ['--o a b', '--f=x a b'],
  dd: ['--o a b'],
  map: ['--s a b'],
  rebase: ['--o a b'],
  resize: ['--o a b', '--s a b', '--f=x a b'],
  snapshot: ['--o a b', '--c a b'],
};

// 7.2's measure prints the help with status 0 after an argument error: tested separately.
const COMMANDS = ['amend', 'bench', 'bitmap', 'check', 'commit', 'compare', 'convert', 'create', 'dd', 'info', 'map', 'snapshot', 'rebase', 'resize'];

for (const version of VERSIONS) {
  test(`${version}: option errors of every subcommand`, async () => {
    const cases: Case[] = [];
    for (const command of COMMANDS) {
      for (const pattern of PATTERNS) {
        if (!PARSES[command]?.includes(pattern.join(' '))) cases.push({ version, args: [command, ...pattern] });
      }
    }
    await compareAll(cases);
  });

  test(`${version}: errors before the subcommand`, async () => {
    const main = [[], ['foo'], ['--bogus'], ['-z'], ['-zq'], ['--=x'], ['-T'], ['-q', 'info'], ['--version=1'], ['--help=x']];
    await compareAll(main.map((args) => ({ version, args, viaEnv: true })));
  });

  test(`${version}: cluster, permutation and abbreviation edge cases`, async () => {
    const cases = [
      ['info', '-Uf'],
      ['info', '-zU', 'x'],
      ['info', 'x', '-zU'],
      ['info', 'x', '-f'],
      ['info', '--f', 'x'],
      ['info', '--out'],
      ['info', '--backing-chain=x', 'x'],
      ['info', 'x', '--bogus', '-h'],
      ['info', 'x', 'y', '--output=json', '--zzz'],
      ['convert', '--ou', 'x'],
      ['convert', '-Oraw', '-pq', '-o', 'a=b', '-x', 'in', 'out'],
      ['dd', 'if=x', 'of=y', '--zzz'],
      ['dd', '-O'],
      ['bitmap', '--zzz', '--d'],
      ['map', '--start-offset'],
      ['map', 'x', '--max'],
      ['rebase', '-b'],
      ['create', '-o'],
      ['snapshot', '-a'],
      ['compare', '-F'],
      ['check', '-r'],
      ['commit', '-b'],
      ['amend', '-t'],
      ['bench', '-c'],
      ['resize', '-z', 'x', '1G'],
      ['resize', '-1G', 'x'],
    ];
    await compareAll(cases.map((args) => ({ version, args })));
  });
}

test('7.2: resize needs two arguments before getopt runs', async () => {
  await compareAll([['resize'], ['resize', 'x'], ['resize', '--shrink']].map((args) => ({ version: '7.2', args })));
});

test('10.0: resize takes a negative size only right after the file name', async () => {
  const cases = [['resize', 'a', '-q', '-1G'], ['resize', 'a', 'b', '-1G'], ['resize', 'a', '-1G', '-2G'], ['resize', 'a', 'b', 'c', '--zz'], ['resize', 'a', 'b', '-q', 'c']];
  await compareAll(cases.map((args) => ({ version: '10.0', args })));
});

test('POSIXLY_CORRECT: options after a positional are positionals', async () => {
  await compareAll(VERSIONS.map((version) => ({ version, args: ['info', 'x', '--zzz'], env: { POSIXLY_CORRECT: '1' } })));
});

test('7.2 measure: glibc message on stderr, then the help on stdout with status 0', async () => {
  for (const args of [['measure', '--zzz'], ['measure', '-f'], ['measure', '--o'], ['measure', '-Z', 'x']]) {
    const [expected, actual] = await Promise.all([runOracle('7.2', args), runInstarAsync(['--qemu-version', '7.2', ...args])]);
    assert.equal(actual.stderr, expected.stderr, args.join(' '));
    assert.equal(actual.status, 0);
    assert.equal(expected.status, 0);
    // Both print their main help on stdout; instar's is in its own words.
    assert.match(expected.stdout, /^usage: qemu-img/m);
    assert.match(actual.stdout, /^usage: qemu-img \[-h \| -V \| -T TRACE\] COMMAND/m);
  }
  await compareAll([['measure', '--zzz'], ['measure', '-f'], ['measure', '--o']].map((args) => ({ version: '10.0', args })));
});

// qemu-img checks some options as its getopt loop meets them: a bad value there is reported
// before a later unknown option, missing argument or -h, and before the checks after the loop.
const OBJ = ['--object', 'bogus,id=x'];
const CHECKED_AS_THEY_COME: string[][] = [
  ['convert', '-S', '7', '--zzz', 'a', 'b'],
  ['convert', '-o', 'a,', '--zzz', 'a', 'b'],
  ['convert', '-r', 'x', '--zzz', 'a', 'b'],
  ['convert', '-S', '7', '-h', 'a', 'b'],
  ['convert', '-r', 'x', '-S', '7', 'a', 'b'],
  ['convert', ...OBJ, '-S', '7', 'a', 'b'],
  ['convert', '-r', 'x', '-c', '-C', 'a', 'b'],
  ['convert', '-n', '-o', 'size=1', '-r', 'x', 'a', 'b'],
  ['convert', '-r', 'x', '-o'],
  ['create', '-o', 'a,', '--zzz', 'c', '1M'],
  ['create', ...OBJ, '-o'],
  ['check', '-r', 'x', '--zzz', 'a'],
  ['check', '--output', 'x', '--zzz', 'a'],
  ['check', ...OBJ, '-h', 'a'],
  ['map', '-s', 'x', '--zzz', 'a'],
  ['map', ...OBJ, '-s', 'x', 'a'],
  ['map', '--output', 'x', ...OBJ, 'a'],
  ['measure', '-o', 'a,', '--zzz', 'a'],
  ['measure', '--size', 'x', '--zzz'],
  ['resize', '--preallocation', 'x', '--zzz', 'a', '+1M'],
  ['commit', '-r', 'x', '--zzz', 'a'],
  ['snapshot', '-l', '-a', 'x', '--zzz', 'a'],
  ['bitmap', '-g', 'x', '--zzz', 'a', 'b'],
  ['amend', '-o', 'a,', '--zzz', 'a'],
  ['bench', '-c', 'x', ...OBJ, 'a'],
  ['rebase', ...OBJ, '--zzz', 'a'],
  ['compare', ...OBJ, '-T', 'x', 'a', 'b'],
  ['info', ...OBJ, '--output', 'x', 'a'],
  ['info', '--output', 'x', ...OBJ, 'a'],
  ['dd', ...OBJ, '--zzz', 'if=a', 'of=b'],
];

for (const version of VERSIONS) {
  test(`${version}: options checked as qemu's getopt loop meets them, before a later argument error`, async () => {
    await compareAll(CHECKED_AS_THEY_COME.map((args) => ({ version, args })));
  });
}

test('10.0: after options that pass, every command reports where its getopt loop stopped', async () => {
  // bench has no --object; every other command creates the secret and then meets --zzz.
  const cases = COMMANDS.map((command) => ({
    version: '10.0' as const,
    args: [command, ...(command === 'bench' ? ['-q'] : ['--object', 'secret,id=s0,data=x']), '--zzz', 'a', 'b'],
  }));
  await compareAll([...cases, { version: '10.0', args: ['measure', '--object', 'secret,id=s0,data=x', '--zzz'] }]);
});

test('-h after options that pass prints the help, as -h alone does', async () => {
  for (const version of VERSIONS) {
    const [expected, alone, actual] = await Promise.all([
      runOracle(version, ['convert', '-S', '4096', '-h']),
      runInstarAsync(['--qemu-version', version, 'convert', '-h']),
      runInstarAsync(['--qemu-version', version, 'convert', '-S', '4096', '-h']),
    ]);
    assert.equal(expected.status, 0, version);
    assert.equal(actual.status, 0, version);
    assert.equal(actual.stderr, '', version);
    assert.equal(actual.stdout, alone.stdout, version);
    assert.match(actual.stdout, /convert/, version);
  }
});
