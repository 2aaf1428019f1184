// The CLI ends its process with process.exit() once the command is done (src/cli/main.ts), without
// waiting for killed guests' pipes or Node's teardown: none of its output may be lost by that.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSTAR_CLI, runInstar } from '../helpers/oracles.ts';

test('output far larger than a pipe buffer, read slowly, arrives whole', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'instar-exit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // 3000 data extents between holes: ~800 KB of map JSON, over ten pipe buffers.
  const image = join(dir, 'sparse.raw');
  const fd = openSync(image, 'w');
  for (let i = 0; i < 3000; i++) writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, i * 8192);
  ftruncateSync(fd, 3000 * 8192);
  closeSync(fd);
  const env = { ...process.env, INSTAR_QEMU_VERSION: '10.0' };
  const direct = runInstar(['map', '-f', 'raw', '--output=json', image], { env });
  assert.equal(direct.status, 0, direct.stderr);
  assert.ok(direct.stdout.length > 500_000);
  const slow = spawnSync('/bin/sh', ['-c', `"$0" map -f raw --output=json "$1" | (sleep 0.5; cat)`, INSTAR_CLI, image], { env, encoding: 'utf8', maxBuffer: 1 << 24 });
  assert.equal(slow.status, 0, slow.stderr);
  assert.equal(slow.stdout, direct.stdout);
});
