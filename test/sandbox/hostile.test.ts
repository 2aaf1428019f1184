// Every hostile op, run in the real sandbox (strict: all four layers; auto: what this machine
// offers, which here is all of them too), must end in a clean one-line error.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { HOSTILE_GUEST, countingServer, expectRefused, runHostile, scratchDir, writeInput, type CountingServer } from './helpers.ts';

for (const mode of ['strict', 'auto'] as const) {
  describe(`hostile guest ops, --sandbox=${mode}`, () => {
    const scratch = scratchDir();
    let input = '';
    let server: CountingServer;

    before(async () => {
      assert.ok(readFileSync(HOSTILE_GUEST).length > 0, 'build the test guest first: npm run build');
      input = writeInput(scratch.dir, 'input.img', Buffer.concat([Buffer.from([0x51, 0x46, 0x49, 0xfb]), Buffer.alloc(4092)]));
      server = await countingServer();
    });
    after(() => {
      server.close();
      scratch.cleanup();
    });

    it('still lets an op read its own input fd and report progress (control)', async () => {
      const progress: number[] = [];
      const value = (await runHostile(mode, 'read-input', input, {}, { onProgress: (done) => progress.push(done) })) as { size: number; head: string };
      assert.equal(value.size, 4096);
      assert.equal(value.head.slice(0, 3), 'QFI');
      assert.deepEqual(progress, [1]);
    });

    it('refuses to open /etc/passwd', async () => {
      assert.match(await expectRefused(runHostile(mode, 'open-passwd', input)), /not permitted/);
    });

    it('refuses to connect to a server on loopback, which sees no connection', async () => {
      await expectRefused(runHostile(mode, 'connect', input, { port: server.port }));
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(server.connections(), 0);
    });

    it('refuses to spawn a child process', async () => {
      await expectRefused(runHostile(mode, 'spawn', input));
    });

    it('ends a 2 GiB allocation in a clean error', async () => {
      assert.match(await expectRefused(runHostile(mode, 'alloc-2g', input)), /memory limit exceeded/);
    });

    it('ends a JS heap bomb in a clean error', async () => {
      assert.match(await expectRefused(runHostile(mode, 'heap-bomb', input, {}, { limits: { memoryBytes: 256 * 1024 * 1024 } })), /memory limit exceeded/);
    });

    it('kills an endless loop at the CPU limit', async () => {
      const t0 = Date.now();
      const message = await expectRefused(runHostile(mode, 'spin', input, {}, { limits: { cpuSeconds: 1, wallMs: 60_000 } }));
      assert.match(message, /CPU time limit exceeded/);
      assert.ok(Date.now() - t0 < 30_000, `took ${Date.now() - t0} ms`);
    });

    it('kills an endless loop at the wall-clock limit (watchdog)', async () => {
      const t0 = Date.now();
      const message = await expectRefused(runHostile(mode, 'spin', input, {}, { limits: { cpuSeconds: 600, wallMs: 1500 } }));
      assert.match(message, /time limit exceeded/);
      assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
    });

    it('cannot write to a read-only input fd', async () => {
      const before = readFileSync(input);
      await expectRefused(runHostile(mode, 'write-input', input));
      assert.deepEqual(readFileSync(input), before);
    });

    it('cannot signal host processes', async () => {
      await expectRefused(runHostile(mode, 'kill-host', input, { pid: process.pid }));
      await expectRefused(runHostile(mode, 'kill-host', input, { pid: process.ppid }));
    });

    it('is killed for a message outside the protocol', async () => {
      assert.match(await expectRefused(runHostile(mode, 'bad-message', input)), /protocol violation/);
    });

    it('is killed for a message line beyond MAX_MESSAGE_BYTES', async () => {
      assert.match(await expectRefused(runHostile(mode, 'flood', input)), /protocol violation \(message too large\)/);
    });

    it('reports a guest that exits without a result, and is not relaunched with fewer layers', async () => {
      const lines: string[] = [];
      assert.match(await expectRefused(runHostile(mode, 'quiet-exit', input, {}, { debug: (l) => lines.push(l) })), /ended without a result/);
      assert.ok(!lines.some((l) => /relaunching|missing/.test(l)), lines.join('\n'));
    });

    it('cannot put control characters on the terminal', async () => {
      assert.match(await expectRefused(runHostile(mode, 'escape-error', input)), /evil/);
    });
  });
}
