// The tracing harness of the hostile-image suite, on its own. Its wall limit must end the whole
// run: strace killed alone leaves the command running with strace's seccomp filter and no tracer,
// where every traced call fails with ENOSYS (realpath, open, execve) — which once showed as a
// same-directory backing file "outside the allowed paths" and as guests that ended without a result.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tracedCommand } from './traced-run.ts';

describe('traced runs (strace harness)', () => {
  it('kills the whole run at the wall limit, not strace alone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'instar-traced-'));
    try {
      // Still running after the limit: an untraced survivor would stat a file (ENOSYS without
      // its tracer) and say so on stdout, a pipe write that needs no tracer.
      const script = "setTimeout(() => { let how = 'ok'; try { require('fs').statSync('/'); } catch (e) { how = e.code; } process.stdout.write('survived: ' + how); }, 2500)";
      const r = await tracedCommand([process.execPath, '-e', script], { cwd: dir, wallLimitMs: 800 });
      assert.equal(r.timedOut, true);
      assert.equal(r.stdout, '', 'the traced command outlived the wall limit');
      assert.equal(r.status, null);
      assert.equal(r.signal, 'SIGKILL');
      assert.ok(r.wallMs < 2500, `the run ended after ${Math.round(r.wallMs)} ms`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports a run within its limit as it ended (control)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'instar-traced-'));
    try {
      const r = await tracedCommand([process.execPath, '-e', "require('fs').statSync('/'); process.stdout.write('done')"], { cwd: dir, wallLimitMs: 30_000 });
      assert.equal(r.timedOut, false);
      assert.equal(r.status, 0);
      assert.equal(r.stdout, 'done');
      assert.ok(r.calls.some((c) => c.path === '/'), 'the stat of / was traced');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
