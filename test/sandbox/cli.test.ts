// Through the real CLI: a guest that plays an exploited parser (the test guest's `info` runs
// the hostile op named in the image) ends as one line on stderr and exit status 1.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runInstar } from '../helpers/oracles.ts';
import { HOSTILE_GUEST, assertOneLine, countingServer, scratchDir, writeInput, type CountingServer } from './helpers.ts';

describe('hostile guest through the CLI', () => {
  const scratch = scratchDir();
  let server: CountingServer;
  before(async () => {
    server = await countingServer();
  });
  after(() => {
    server.close();
    scratch.cleanup();
  });

  const cases: [string, () => Record<string, unknown>, RegExp][] = [
    ['open-passwd', () => ({}), /not permitted/],
    ['connect', () => ({ port: server.port }), /EPERM/],
    ['spawn', () => ({}), /not permitted/],
    ['alloc-2g', () => ({}), /memory limit exceeded/],
    ['write-input', () => ({}), /EBADF/],
    ['kill-host', () => ({ pid: process.pid }), /EPERM/],
    ['bad-message', () => ({}), /protocol violation/],
  ];
  for (const mode of ['strict', 'auto']) {
    for (const [op, options, expected] of cases) {
      it(`${op}, --sandbox=${mode}: one line, exit status 1`, () => {
        const image = writeInput(scratch.dir, `${op}.img`, `HOSTILE:${op} ${JSON.stringify(options())}`);
        const r = runInstar(['info', `--sandbox=${mode}`, image], { env: { INSTAR_TEST_GUEST: HOSTILE_GUEST }, timeoutMs: 60_000 });
        assert.equal(r.status, 1, r.stderr);
        assert.equal(r.stdout, '');
        assert.ok(r.stderr.startsWith(`qemu-img: Could not open '${image}': `), r.stderr);
        assert.ok(r.stderr.endsWith('\n'));
        assertOneLine(r.stderr.slice(0, -1));
        assert.match(r.stderr, expected);
      });
    }
  }

  it('the loopback server saw no connection', () => {
    assert.equal(server.connections(), 0);
  });

  it('a real image still works through the test guest (control)', () => {
    const image = writeInput(scratch.dir, 'plain.raw', Buffer.alloc(65536));
    const r = runInstar(['info', '-f', 'raw', '--sandbox=strict', image], { env: { INSTAR_TEST_GUEST: HOSTILE_GUEST } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /file format: raw/);
  });
});
