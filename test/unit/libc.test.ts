// src/host/libc.ts loads koffi's native addon directly (its index.js pulls in https, tls, crypto
// and zlib only to name the platform): the addon found must be koffi's own and must call libc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { libcFunction } from '../../src/host/libc.ts';

test('libc calls work through the addon koffi would load', () => {
  const getpid = libcFunction<() => number>('int getpid()');
  assert.ok(getpid, 'koffi loads on this Linux machine');
  assert.equal(getpid(), process.pid);
});

test("the addon is required without koffi's index.js (none of https/tls/zlib loaded for it)", () => {
  const script = `import('${new URL('../../src/host/libc.ts', import.meta.url).href}').then(({ libcFunction }) => {
    const getpid = libcFunction('int getpid()');
    const loaded = ['https', 'tls', 'zlib'].filter((m) => process.moduleLoadList.some((x) => x === 'NativeModule ' + m));
    console.log(JSON.stringify({ ok: getpid() === process.pid, loaded }));
  })`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { ok: true, loaded: [] });
});
