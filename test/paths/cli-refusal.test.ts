// End to end: the built CLI (`info --backing-chain`) on images whose backing file is hostile.
// Under strace, no call may name the refused target, no IP socket may open, and the CLI must print
// one clear line and exit 1. The real qemu-img, traced the same way, does open the target: that is
// what shows this test can fail.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSTAR_ALIAS, runQemu, oracle, VERSIONS } from '../helpers/oracles.ts';
import { straced, callsNaming, networkCalls } from './strace.ts';
import { tiered } from '../helpers/long.ts';

const base = realpathSync(mkdtempSync(join(tmpdir(), 'instar-cli-paths-')));
after(() => rmSync(base, { recursive: true, force: true }));
const img = join(base, 'img');
mkdirSync(img);
mkdirSync(join(base, 'extra'));
symlinkSync('/etc/passwd', join(img, 'out'));

/** qemu-img create -u: the backing file is written into the header, never opened. */
function create(file: string, backing?: string, backingFormat = 'raw'): void {
  const args = ['create', '-q', '-f', 'qcow2', ...(backing === undefined ? [] : ['-u', '-b', backing, '-F', backingFormat]), file, '1M'];
  const r = runQemu('7.2', args, { cwd: base, timeoutMs: 20_000 });
  assert.equal(r.status, 0, `qemu-img ${args.join(' ')}: ${r.stderr}`);
}

const POLICY = "(instar's path policy; allow it with --allow-path)";
const hostile: { file: string; backing: string; target: string; reason: string }[] = [
  { file: 'abs', backing: '/etc/passwd', target: '/etc/passwd', reason: `'/etc/passwd' is outside the allowed paths ${POLICY}` },
  { file: 'rel', backing: `${'../'.repeat(img.split('/').length - 1)}etc/passwd`, target: '/etc/passwd', reason: `('/etc/passwd') is outside the allowed paths ${POLICY}` },
  { file: 'link', backing: 'out', target: '/etc/passwd', reason: `goes through the symbolic link '${join(img, 'out')}' to '/etc/passwd', outside the allowed paths ${POLICY}` },
  { file: 'json', backing: 'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/passwd"}}', target: '/etc/passwd', reason: "names the protocol 'json:'; instar opens only plain files an image names (instar's path policy)" },
  { file: 'nbd', backing: 'nbd://127.0.0.1:1', target: '/nonexistent', reason: "'nbd://127.0.0.1:1' names the protocol 'nbd:'" },
  { file: 'file', backing: 'file:/etc/passwd', target: '/etc/passwd', reason: "names the protocol 'file:'" },
  { file: 'environ', backing: '/proc/self/environ', target: '/proc/self/environ', reason: `'/proc/self/environ' is outside the allowed paths ${POLICY}` },
  { file: 'zero', backing: '/dev/zero', target: '/dev/zero', reason: `'/dev/zero' is outside the allowed paths ${POLICY}` },
];
for (const h of hostile) create(`img/${h.file}.qcow2`, h.backing);
create('img/base.qcow2');
create('img/good.qcow2', 'base.qcow2', 'qcow2');
create('extra/b.qcow2');
create('img/up.qcow2', '../extra/b.qcow2', 'qcow2');
create('img/self.qcow2', 'self.qcow2', 'qcow2');

function instar(args: string[], env: Record<string, string> = {}) {
  const argv = Object.keys(env).length ? ['env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`)] : [];
  return straced([...argv, process.execPath, INSTAR_ALIAS, ...args], { cwd: base });
}

function assertRefused(r: ReturnType<typeof instar>, target: string, reason: string): void {
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^qemu-img: [^\n]*\n$/, 'one line');
  assert.ok(r.stderr.includes(reason), r.stderr);
  assert.deepEqual(callsNaming(r.calls, target, base).map((c) => c.line), [], `${target} was touched`);
  assert.deepEqual(networkCalls(r.calls).map((c) => c.line), []);
}

for (const h of hostile) {
  test(`info --backing-chain --sandbox=none refuses ${h.backing} without touching it`, () => {
    assertRefused(instar(['info', '--backing-chain', '--sandbox=none', `img/${h.file}.qcow2`]), h.target, h.reason);
  });
}

test('the default (sandboxed) mode refuses the same way', (t) => {
  const probe = instar(['info', 'img/base.qcow2']);
  if (probe.status !== 0) t.todo(`the sandboxed mode does not run yet here: ${probe.stderr.trim()}`);
  // Short tier: one of each kind of refusal (a path outside the allowed ones, a symbolic link out, a
  // protocol, the network one); every hostile name is refused above with --sandbox=none, and all of
  // them here in the long tier.
  for (const h of tiered(hostile, (x) => ['abs', 'link', 'json', 'nbd'].includes(x.file))) assertRefused(instar(['info', '--backing-chain', `img/${h.file}.qcow2`]), h.target, h.reason);
});

test('a self-referencing backing file gets qemu-img\'s loop message', () => {
  const r = instar(['info', '--backing-chain', '--sandbox=none', 'img/self.qcow2']);
  assert.equal(r.status, 1);
  assert.equal(r.stderr, "qemu-img: Backing file 'img/self.qcow2' creates an infinite loop.\n");
});

test('allowed chains open: same directory, and another directory once --allow-path or INSTAR_ALLOW_PATH names it', () => {
  const good = instar(['info', '--backing-chain', '--sandbox=none', 'img/good.qcow2']);
  assert.equal(good.status, 0, good.stderr);
  assert.match(good.stdout, /image: img\/base\.qcow2/);
  const up = instar(['info', '--backing-chain', '--sandbox=none', 'img/up.qcow2']);
  assertRefused(up, join(base, 'extra', 'b.qcow2'), `'img/../extra/b.qcow2' ('${join(base, 'extra', 'b.qcow2')}') is outside the allowed paths ${POLICY}`);
  for (const r of [
    instar(['info', '--backing-chain', '--sandbox=none', '--allow-path', 'extra', 'img/up.qcow2']),
    instar(['info', '--backing-chain', '--sandbox=none', 'img/up.qcow2'], { INSTAR_ALLOW_PATH: join(base, 'extra') }),
  ]) {
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /image: img\/\.\.\/extra\/b\.qcow2/);
  }
});

for (const version of VERSIONS) {
  test(`control: qemu-img ${version} itself opens the hostile backing files`, () => {
    for (const file of ['abs', 'link']) {
      const r = straced(['timeout', '20', oracle(version), 'info', '--backing-chain', `img/${file}.qcow2`], { cwd: base });
      assert.notDeepEqual(callsNaming(r.calls, '/etc/passwd', base), [], `qemu-img ${version} did not open /etc/passwd for ${file}`);
    }
  });
}
