// dist/cli.js run as a program: a two-line shell preamble drops NODE_EXTRA_CA_CERTS (which Node 20
// reads before any JS runs, ~40 ms here) and runs node on the same file, for which that preamble
// is a string statement and a comment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { INSTAR_ALIAS, INSTAR_CLI } from '../helpers/oracles.ts';

// Node warns on stderr when it cannot load this file: the warning shows whether node read it.
const env = { ...process.env, NODE_EXTRA_CA_CERTS: '/nonexistent/instar-test-ca.pem', INSTAR_QEMU_VERSION: '10.0' };

test('run as a program, the CLI starts node without NODE_EXTRA_CA_CERTS', () => {
  for (const program of [INSTAR_CLI, INSTAR_ALIAS]) {
    const r = spawnSync(program, ['--version'], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /^qemu-img version 10\.0\.0 \(instar /);
  }
});

test('run by node directly, the same file still works (and node reads the variable itself)', () => {
  const r = spawnSync(process.execPath, [INSTAR_CLI, '--version'], { env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^qemu-img version 10\.0\.0 \(instar /);
  assert.match(r.stderr, /instar-test-ca\.pem/);
});

test('the preamble is the first two lines', () => {
  const [first, second] = readFileSync(INSTAR_CLI, 'utf8').split('\n');
  assert.equal(first, '#!/bin/sh');
  // --openssl-legacy-provider where this node has it: CAST5 for --sandbox=none (test/encryption/more-ciphers).
  const legacy = process.allowedNodeEnvironmentFlags.has('--openssl-legacy-provider') ? ' --openssl-legacy-provider' : '';
  assert.equal(second, `":" //; unset NODE_EXTRA_CA_CERTS; exec node${legacy} "$0" "$@"`);
});
