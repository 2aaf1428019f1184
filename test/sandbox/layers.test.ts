// Layer reporting and degradation: 'auto' runs without a missing layer and says so, 'strict'
// refuses; and each layer on its own is what stops the attack it is meant for.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { HOSTILE_GUEST, expectRefused, runHostile, scratchDir, writeInput } from './helpers.ts';
import { runOp } from '../../src/host/sandbox/run.ts';
import { planLayers } from '../../src/host/sandbox/probe.ts';
import { verifyBwrap } from '../../src/host/sandbox/layers/bwrap.ts';
import { seccompProgram } from '../../src/host/sandbox/seccomp.ts';

describe('sandbox layers', () => {
  const scratch = scratchDir();
  const input = writeInput(scratch.dir, 'input.img', 'plain bytes');
  after(scratch.cleanup);

  it('are all present on this machine (bwrap comes with install-oracles.sh)', () => {
    const plan = planLayers();
    assert.deepEqual(plan.missing, []);
    assert.ok(plan.bwrap && plan.prlimit && plan.permission && plan.seccomp);
    // The trial sandbox used to diagnose launch failures works here, with the filter too.
    assert.equal(verifyBwrap(plan.bwrap, seccompProgram()), undefined);
  });

  it('are reported one line each under --debug', async () => {
    const lines: string[] = [];
    await runHostile('strict', 'read-input', input, {}, { debug: (l) => lines.push(l) });
    for (const layer of ['permission', 'prlimit', 'bwrap', 'seccomp']) assert.ok(lines.includes(`sandbox: ${layer}: active`), lines.join('\n'));
  });

  it("'auto' runs without bwrap, reporting it and seccomp missing", async () => {
    const lines: string[] = [];
    const value = (await runHostile('auto', 'read-input', input, {}, { disableLayers: ['bwrap'], debug: (l) => lines.push(l) })) as { size: number };
    assert.equal(value.size, 11);
    assert.ok(lines.some((l) => /^sandbox: bwrap: missing \(.+\)$/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /^sandbox: seccomp: missing \(.+\)$/.test(l)), lines.join('\n'));
    assert.ok(lines.includes('sandbox: permission: active'));
  });

  for (const layer of ['bwrap', 'seccomp', 'prlimit', 'permission'] as const) {
    it(`'strict' refuses to run without ${layer}`, async () => {
      const message = await expectRefused(runHostile('strict', 'read-input', input, {}, { disableLayers: [layer] }));
      assert.match(message, new RegExp(`sandbox layer '${layer}' unavailable`));
    });
  }

  it('hands the guest many devices (fd numbers past 64), with every layer on', async () => {
    const fds = Array.from({ length: 80 }, () => openSync(input, 'r'));
    try {
      const devices = fds.map((fd, i) => ({ fd, role: i === 0 ? ('input' as const) : ('extent' as const), writable: false, name: `e${i}` }));
      const value = (await runOp('read-input', {}, devices, { mode: 'strict', guestPath: HOSTILE_GUEST })) as { size: number };
      assert.equal(value.size, 11);
    } finally {
      fds.forEach((fd) => closeSync(fd));
    }
  });

  it('the guest holds no regular file but its devices, whatever else the host has open', async () => {
    const other = openSync(input, 'r'); // the same file again: not given, so it must not show up twice
    const secret = openSync(new URL(import.meta.url), 'r');
    try {
      for (const disableLayers of [[], ['bwrap' as const]]) {
        const { open } = (await runHostile('auto', 'list-fds', input, {}, { disableLayers })) as { open: { fd: number; dev: number; ino: number; file: boolean }[] };
        const files = open.filter((f) => f.file);
        assert.deepEqual(files.map((f) => f.fd), [4], JSON.stringify(open));
        const secretStat = fstatSync(secret);
        assert.ok(!open.some((f) => f.dev === secretStat.dev && f.ino === secretStat.ino));
      }
    } finally {
      closeSync(other);
      closeSync(secret);
    }
  });

  it('without bwrap and seccomp the permission model still refuses paths and children', async () => {
    const degraded = { disableLayers: ['bwrap' as const] };
    assert.match(await expectRefused(runHostile('auto', 'open-passwd', input, {}, degraded)), /not permitted/);
    await expectRefused(runHostile('auto', 'spawn', input, {}, degraded));
  });

  it('without the permission model, seccomp still refuses children and bwrap hides /etc/passwd', async () => {
    const degraded = { disableLayers: ['permission' as const] };
    assert.match(await expectRefused(runHostile('auto', 'spawn', input, {}, degraded)), /EPERM/);
    assert.match(await expectRefused(runHostile('auto', 'open-passwd', input, {}, degraded)), /ENOENT/);
  });

  it('without seccomp, the network namespace alone still keeps loopback out of reach', async () => {
    let connections = 0;
    const server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as { port: number }).port;
      assert.match(await expectRefused(runHostile('auto', 'connect', input, { port }, { disableLayers: ['seccomp'] })), /ECONNREFUSED|ENETUNREACH/);
      assert.equal(connections, 0);
    } finally {
      server.close();
    }
  });

  it('without prlimit, the watchdog still ends an endless loop', async () => {
    const message = await expectRefused(runHostile('auto', 'spin', input, {}, { disableLayers: ['prlimit'], limits: { wallMs: 1500 } }));
    assert.match(message, /time limit exceeded/);
  });
});
