// Profile resolution: --qemu-version, INSTAR_QEMU_VERSION, the installed qemu-img, the newest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, symlinkSync, mkdirSync, chmodSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { INSTAR_CLI, oracle, runInstar } from '../helpers/oracles.ts';
import { testTempDir } from '../helpers/temp-dir.ts';
import { parseQemuVersion, resolveQemuVersion, probeInstalledQemuImg, ProfileError, NEWEST } from '../../src/output/profile.ts';
import { finishGlobals, emptyRawGlobals, prescanQemuVersion, GlobalOptionError } from '../../src/cli/globals.ts';

test('versions: X.Y or X.Y.Z, anything else is refused', () => {
  assert.equal(parseQemuVersion('7.2', 'x'), '7.2');
  assert.equal(parseQemuVersion('10.0.2', 'x'), '10.0');
  assert.equal(parseQemuVersion('08.01', 'x'), '8.1');
  for (const bad of ['7', '', 'abc', '7.2.1.1', '0.5', '-1.0', '7.x', '10.0-rc1']) {
    assert.throws(() => parseQemuVersion(bad, '--qemu-version'), ProfileError, bad);
  }
});

test('precedence: flag, environment, installed, newest', () => {
  const probe = () => '8.2';
  assert.deepEqual(resolveQemuVersion({ flag: '7.2', env: { INSTAR_QEMU_VERSION: '9.0' }, probe }), { version: '7.2', source: 'flag' });
  assert.deepEqual(resolveQemuVersion({ env: { INSTAR_QEMU_VERSION: '9.0' }, probe }), { version: '9.0', source: 'env' });
  assert.deepEqual(resolveQemuVersion({ env: { INSTAR_QEMU_VERSION: '' }, probe }), { version: '8.2', source: 'installed' });
  assert.deepEqual(resolveQemuVersion({ env: {}, probe: () => undefined }), { version: NEWEST, source: 'default' });
  assert.throws(() => resolveQemuVersion({ env: { INSTAR_QEMU_VERSION: 'new' }, probe }), /INSTAR_QEMU_VERSION/);
});

test('the probe skips instar found under the name qemu-img', (t) => {
  const root = testTempDir(t, 'instar-probe-');
  const dirs = ['alias', 'wrapper', 'fake', 'empty'].map((d) => join(root, d));
  dirs.forEach((d) => mkdirSync(d));
  const [alias, wrapper, fake, empty] = dirs;
  symlinkSync(INSTAR_CLI, join(alias, 'qemu-img')); // like dist/alias/qemu-img
  writeFileSync(join(wrapper, 'qemu-img'), `#!/bin/sh\nexec "${process.execPath}" "${INSTAR_CLI}" "$@"\n`);
  writeFileSync(join(fake, 'qemu-img'), '#!/bin/sh\necho "qemu-img version 8.1.5 (fake)"\n');
  chmodSync(join(wrapper, 'qemu-img'), 0o755);
  chmodSync(join(fake, 'qemu-img'), 0o755);
  // No system directory on PATH: /usr/bin holds qemu-img 7.2 here (the scripts name their interpreters).
  const path = (...ds: string[]) => ({ PATH: ds.join(':') });

  assert.equal(probeInstalledQemuImg(path(empty, alias, wrapper)), undefined);
  assert.equal(probeInstalledQemuImg(path(alias, wrapper, fake)), '8.1');
  assert.equal(probeInstalledQemuImg(path(wrapper, dirname(oracle('10.0')))), '10.0');
  assert.equal(probeInstalledQemuImg(path(dirname(oracle('7.2')), fake)), '7.2');

  // The same through the CLI: the profile shows in --version.
  const r = runInstar(['--version'], { env: { ...path(alias, wrapper, fake), INSTAR_QEMU_VERSION: '' } });
  assert.match(r.stdout, /^qemu-img version 8\.1\.0 \(instar/);
  const none = runInstar(['--version'], { env: { ...path(alias, wrapper), INSTAR_QEMU_VERSION: '' } });
  assert.match(none.stdout, new RegExp(`^qemu-img version ${NEWEST.replace('.', '\\.')}\\.0 \\(instar`));
});

test('invalid versions from the command line or the environment: one line, status 1', () => {
  const a = runInstar(['--qemu-version', '7', 'info', 'x']);
  assert.equal(a.status, 1);
  assert.equal(a.stderr, "qemu-img: invalid qemu-img version '7' in --qemu-version (expected MAJOR.MINOR, e.g. 7.2 or 10.0)\n");
  const b = runInstar(['info', 'x'], { env: { INSTAR_QEMU_VERSION: 'latest' } });
  assert.equal(b.status, 1);
  assert.match(b.stderr, /^qemu-img: invalid qemu-img version 'latest' in INSTAR_QEMU_VERSION/);
  assert.equal(b.stderr.split('\n').length, 2);
});

test('--qemu-version is found before parsing, in both spellings, not after --', () => {
  assert.equal(prescanQemuVersion(['info', '--qemu-version', '7.2', 'x']), '7.2');
  assert.equal(prescanQemuVersion(['--qemu-version=10.0', 'info']), '10.0');
  assert.equal(prescanQemuVersion(['info', '--', '--qemu-version=7.2']), undefined);
});

test('global options: sandbox mode and allowed paths from flags and environment', () => {
  const raw = { ...emptyRawGlobals(), allowPaths: ['rel', '/abs'] };
  const g = finishGlobals(raw, { INSTAR_ALLOW_PATH: '/e1::/e2', INSTAR_SANDBOX: 'strict' }, '/cwd', '10.0');
  assert.deepEqual(g.allowPaths, ['/e1', '/e2', '/cwd/rel', '/abs']);
  assert.equal(g.sandbox, 'strict');
  assert.equal(finishGlobals({ ...emptyRawGlobals(), sandbox: 'none' }, { INSTAR_SANDBOX: 'strict' }, '/', '7.2').sandbox, 'none');
  assert.equal(finishGlobals(emptyRawGlobals(), {}, '/', '7.2').sandbox, undefined);
  assert.throws(() => finishGlobals({ ...emptyRawGlobals(), sandbox: 'off' }, {}, '/', '7.2'), GlobalOptionError);
  assert.throws(() => finishGlobals(emptyRawGlobals(), { INSTAR_SANDBOX: 'x' }, '/', '7.2'), /INSTAR_SANDBOX/);
  const cli = runInstar(['--qemu-version', '10.0', 'info', '--sandbox=off', 'x']);
  assert.equal(cli.stderr, "qemu-img: invalid --sandbox value 'off' (expected auto, strict or none)\n");
  assert.equal(cli.status, 1);
});

test('the probe reads the version compiled into an ELF qemu-img, and runs anything else', (t) => {
  const root = testTempDir(t, 'instar-probe-elf-');
  const elf = (dir: string, body: string) => {
    mkdirSync(join(root, dir));
    // Not a runnable program: a version found here can only come from reading the file.
    writeFileSync(join(root, dir, 'qemu-img'), Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.alloc(60), Buffer.from(body)]));
    chmodSync(join(root, dir, 'qemu-img'), 0o755);
    return join(root, dir);
  };
  const one = elf('one', '\0qemu-img version 9.1.3 (Debian 1:9.1)\nCopyright\0qemu-img version 9.1.3 (Debian 1:9.1)\n\0');
  const two = elf('two', '\0qemu-img version 9.1.3 (x)\n\0qemu-img version 8.0.0 (y)\n\0');
  const none = elf('none', '\0no version here\0');
  assert.equal(probeInstalledQemuImg({ PATH: one }), '9.1');
  // Two different versions, or none: the file is run instead, and this one cannot run.
  assert.equal(probeInstalledQemuImg({ PATH: two }), undefined);
  assert.equal(probeInstalledQemuImg({ PATH: none }), undefined);
  // The real binaries give what their --version says.
  for (const v of ['7.2', '10.0'] as const) assert.equal(probeInstalledQemuImg({ PATH: dirname(oracle(v)) }), v);
});
