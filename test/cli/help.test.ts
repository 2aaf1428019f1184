// --help and --version: qemu-img's help texts per profile, instar's own version lines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { oracle, runInstar } from '../helpers/oracles.ts';
import { SUBCOMMANDS, commandTable } from '../../src/cli/tables.ts';
import { commands } from '../../src/host/commands/index.ts';

function oracleOut(version: '7.2' | '10.0', args: string[]) {
  return spawnSync(oracle(version), args, { argv0: 'qemu-img', encoding: 'utf8' });
}

test('every subcommand --help: exit 0 like qemu-img, and lists each option the profile accepts', () => {
  for (const version of ['7.2', '10.0'] as const) {
    const major = Number(version.split('.')[0]);
    for (const name of SUBCOMMANDS) {
      const expected = oracleOut(version, [name, '--help']);
      const actual = runInstar(['--qemu-version', version, name, '--help']);
      assert.equal(actual.status, expected.status, `${version} ${name} --help status`);
      assert.equal(actual.stderr, expected.stderr, `${version} ${name} --help stderr`);
      if (expected.status !== 0) continue;
      if (major >= 10) {
        for (const opt of commandTable(name, major)?.long ?? []) {
          assert.ok(actual.stdout.includes(`--${opt.name}`), `${version} ${name} --help lacks --${opt.name}`);
        }
        assert.match(actual.stdout, new RegExp(`^usage: qemu-img ${name} `));
      } else {
        // 7.2 answers a command's -h with the main help.
        assert.match(actual.stdout, /^qemu-img version 7\.2\.0 \(instar /);
      }
    }
  }
});

test('main help lists every command and instar\'s formats, in instar\'s words', () => {
  for (const version of ['7.2', '10.0'] as const) {
    const r = runInstar(['--qemu-version', version, '--help']);
    assert.equal(r.status, 0);
    for (const name of SUBCOMMANDS) assert.match(r.stdout, new RegExp(`^  ${name} +\\S`, 'm'), `${version}: ${name}`);
    assert.match(r.stdout, /^Supported formats: .*\braw\b/m);
    assert.match(r.stdout, /^Supported formats: .*\bqcow2\b/m);
    assert.ok(!r.stdout.includes('QEMU disk image utility'), 'no copied qemu text');
  }
});

test('--version says instar and the emulated profile', () => {
  for (const [version, args] of [['7.2', ['--version']], ['10.0', ['-V']], ['10.0', ['-V', 'info', '--bogus']]] as const) {
    const r = runInstar(['--qemu-version', version, ...args]);
    assert.equal(r.status, 0);
    assert.match(r.stdout, new RegExp(`^qemu-img version ${version.replace('.', '\\.')}\\.0 \\(instar [0-9.]+\\)\\n`));
    assert.match(r.stdout, new RegExp(`emulating qemu-img ${version.replace('.', '\\.')}`));
  }
});

test('program name: instar as itself, qemu-img under the alias', () => {
  const asInstar = runInstar(['--qemu-version', '10.0', 'info', '--bogus'], { alias: false });
  assert.equal(asInstar.stderr, "instar info: unrecognized option '--bogus'\nTry 'instar info --help' for more info\n");
  const asAlias = runInstar(['--qemu-version', '7.2', 'nosuch']);
  assert.equal(asAlias.stderr, "qemu-img: Command not found: nosuch\nTry 'qemu-img --help' for more information\n");
});

test('every qemu-img subcommand has a trusted half: none answers "not implemented yet"', () => {
  assert.deepEqual(SUBCOMMANDS.filter((name) => !Object.hasOwn(commands, name)), []);
  for (const name of SUBCOMMANDS) {
    const r = runInstar(['--qemu-version', '10.0', name, 'no-such-file.img']);
    assert.doesNotMatch(r.stderr, /is not implemented yet/, name);
  }
});
