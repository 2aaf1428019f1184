// openReferenced under strace: a refused file is never opened, and the walk examines nothing
// outside the allowed directory except the directories on the way down to it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { makeTree } from './fixture.ts';
import { straced, callsNaming, networkCalls, type TracedCall } from './strace.ts';

const tree = makeTree();
after(() => tree.cleanup());
const { base, img, top } = tree;
const SCRIPT = fileURLToPath(new URL('./open-one.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

function traceOpen(name: string, allow: string[] = []) {
  const r = straced([process.execPath, '--import', TSX, SCRIPT, top, name, 'backing', JSON.stringify(allow)], { cwd: base });
  assert.equal(r.status, 0, r.stderr);
  const outcome = JSON.parse(r.stdout) as { ok: boolean; message?: string; resolved?: string };
  const begin = r.calls.findIndex((c) => c.path === '/instar-trace-begin');
  const end = r.calls.findIndex((c) => c.path === '/instar-trace-end');
  assert.ok(begin >= 0 && end > begin, 'markers traced');
  const pid = r.calls[begin].pid;
  // Only the calling thread: tsx may write its cache from another one meanwhile.
  const during = r.calls.slice(begin + 1, end).filter((c) => c.pid === pid);
  return { outcome, all: r.calls, during };
}

/** Every path examined is inside img/ or one of its ancestors (the way in). */
function assertStayedIn(during: TracedCall[]): void {
  for (const c of during) {
    if (!c.path) continue;
    const inside = c.path === img || c.path.startsWith(img + '/');
    const onTheWay = c.path === '/' || img.startsWith(c.path + '/');
    assert.ok(inside || onTheWay, `examined outside the allowlist: ${c.line}`);
  }
}

const hostile: [string, string, RegExp][] = [
  ['/etc/passwd', '/etc/passwd', /outside the allowed paths/],
  [`${'../'.repeat(img.split('/').length - 1)}etc/passwd`, '/etc/passwd', /\('\/etc\/passwd'\) is outside/],
  ['outlink', '/etc/passwd', /symbolic link .* to '\/etc\/passwd'/],
  ['outback', join(base, 'outside'), /symbolic link .* to '\.\.\/outside\/back'/],
  ['absoutback', join(base, 'outside'), /symbolic link .* outside the allowed paths/],
  ['json:{"driver":"file","filename":"/etc/passwd"}', '/etc/passwd', /protocol 'json:'/],
  ['file:/etc/passwd', '/etc/passwd', /protocol 'file:'/],
  ['nbd://127.0.0.1:1', '/nonexistent-nbd', /protocol 'nbd:'/],
  ['/proc/self/environ', '/proc/self/environ', /outside the allowed paths/],
  ['/dev/zero', '/dev/zero', /outside the allowed paths/],
  ['fifo', '/nonexistent-fifo', /is a FIFO, not a regular file/],
  ['dir', '/nonexistent-dir', /is a directory, not a regular file/],
];

for (const [name, target, message] of hostile) {
  test(`refused and never opened: ${name}`, () => {
    const { outcome, all, during } = traceOpen(name);
    assert.equal(outcome.ok, false);
    assert.match(outcome.message ?? '', message);
    assert.deepEqual(callsNaming(all, target, base).map((c) => c.line), [], `${target} was touched`);
    assert.deepEqual(during.filter((c) => /^open/.test(c.syscall)).map((c) => c.line), [], 'nothing opened');
    assert.deepEqual(networkCalls(all).map((c) => c.line), []);
    assertStayedIn(during);
  });
}

test('/proc and /dev stay untouched even when / is allowed', () => {
  for (const target of ['/proc/self/environ', '/dev/zero']) {
    const { outcome, during } = traceOpen(target, ['/']);
    assert.match(outcome.message ?? '', /instar never opens files under \/proc, \/sys or \/dev/);
    assert.deepEqual(callsNaming(during, target.split('/').slice(0, 2).join('/'), base).map((c) => c.line), []);
  }
});

test('an allowed file is opened once, O_NOFOLLOW|O_NONBLOCK|O_NOCTTY, by its resolved path', () => {
  const { outcome, during } = traceOpen('inlink');
  assert.deepEqual(outcome, { ok: true, resolved: join(img, 'sub', 'c.raw') });
  const opens = during.filter((c) => /^open/.test(c.syscall));
  assert.equal(opens.length, 1, opens.map((c) => c.line).join('\n'));
  assert.equal(opens[0].path, join(img, 'sub', 'c.raw'));
  for (const flag of ['O_RDONLY', 'O_NOFOLLOW', 'O_NONBLOCK', 'O_NOCTTY']) assert.ok(opens[0].line.includes(flag), opens[0].line);
  assertStayedIn(during);
});
