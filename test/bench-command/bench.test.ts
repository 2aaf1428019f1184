// qemu-img bench against both oracles: every option's values as each version parses them, the
// rules between options, the offsets of the requests (wrapping modulo the image size, so a request
// can pass the end and fail), reads over a backing chain, writes of the pattern to raw and qcow2
// images (files compared byte for byte afterwards), and the refusals. stdout, stderr and exit status are
// compared with the timing value masked; instar's timing line is checked for qemu's format.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';
import { instarRun, qemuRun, tempDir } from '../dd/helpers.ts';

let dir: string;
let cleanup: () => void;
const p = (name: string) => join(dir, name);

before(() => {
  ({ dir, cleanup } = tempDir('instar-bench-'));
  const next = prng(5);
  // 1000000 bytes: qemu's raw size is 1000448 (whole sectors), which the wrap rule meets.
  const bytes = Buffer.alloc(1000000);
  for (let i = 0; i + 4 <= bytes.length; i += 4) bytes.writeUInt32LE(next(), i);
  writeFileSync(p('a.raw'), bytes);
  writeFileSync(p('empty.raw'), '');
  const ok = (r: RunResult) => assert.equal(r.status, 0, r.stderr);
  ok(qemuRun('10.0', ['convert', '-f', 'raw', '-O', 'qcow2', p('a.raw'), p('base.qcow2')]));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('top.qcow2')]));
  ok(qemuRun('10.0', ['-f', 'qcow2', '-c', 'write -P 9 64k 128k', p('top.qcow2')], undefined, 'qemu-io'));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', p('nobase.qcow2'), '1M']));
  // Every cluster allocated: bench -w writes it in place, as qemu does.
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', p('full.qcow2'), '1M']));
  ok(qemuRun('10.0', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', p('full.qcow2')], undefined, 'qemu-io'));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', p('evil.qcow2'), '1M']));
});
after(() => cleanup());

const TIMING = /^Run completed in \d+\.\d{3} seconds\.$/m;
const masked = (text: string) => text.replace(TIMING, 'Run completed in X seconds.');

/** `bench args` by both: stdout (timing masked), stderr and exit status alike; instar's timing line as qemu formats it. */
async function same(version: OracleVersion, args: string[], label: string, sandboxed = false): Promise<RunResult> {
  const q = qemuRun(version, ['bench', ...args]);
  const i = await instarRun(version, ['bench', ...args], { sandboxed });
  assert.equal(i.stderr, q.stderr, `${label}: stderr`);
  assert.equal(masked(i.stdout), masked(q.stdout), `${label}: stdout`);
  assert.equal(i.status, q.status, `${label}: exit status`);
  assert.equal(TIMING.test(i.stdout), TIMING.test(q.stdout), `${label}: timing line`);
  return i;
}

const OPTION_VALUES: [string, string[]][] = [
  ['-c', ['0', '-0', '+3', ' 7', '0x10', '010', '08', '-1', 'abc', '1k', '2147483648', '', '1 ']],
  ['-d', ['1', '0x10', '2147483647', '-1', 'abc', '1k', '2147483648', '']],
  ['-o', ['0', '1k', '1.5k', '0x200', '512', 'abc', '-1', '9E', '1.5', '', '0x1k']],
  ['-s', ['0', '512', '1k', '0x1k', 'abc', '-1', '2G', '1.5k', '']],
  ['-S', ['0', '512', '1.5k', '-1', 'abc', '2G', '']],
  ['--pattern', ['0x41', '255', '-0', 'abc', '256', '-1', '']],
  ['--flush-interval', ['0', '1', 'abc', '-1', '2147483648']],
  ['-t', ['foo', 'none', 'off', 'writeback', 'writethrough', 'directsync', 'unsafe']],
  ['-i', ['foo', 'threads', 'native', 'io_uring']],
];

for (const version of VERSIONS) {
  test(`${version}: option values`, async () => {
    for (const [option, values] of OPTION_VALUES) {
      for (const value of values) {
        // -c 1 keeps every valid run short; -c's own values go after it and win.
        await same(version, ['-c', '1', '-f', 'raw', option, value, p('a.raw')], `${option} ${JSON.stringify(value)}`);
      }
    }
  });

  test(`${version}: rules between options, file names, opening`, async () => {
    const a = p('a.raw');
    const cases: string[][] = [
      ['-c', '1', '-n', '-f', 'raw', a], ['-c', '1', '-n', '-t', 'none', '-f', 'raw', a], ['-c', '1', '-i', 'native', '-t', 'directsync', '-f', 'raw', a],
      ['-c', '1', '-n', p('nope.raw')], ['-c', '1', '-n', '-f', 'qcow2', a],
      ['-c', '1', a, a], ['-c', '1'], ['-c', 'abc'], ['-c', '1', p('nope.raw')], ['-c', '1', '-f', 'qcow2', a], ['-c', '1', '-f', 'foo', a],
      ['-c', '1', '--flush-interval=4', '-d', '8', '-w', '-f', 'raw', a], ['-c', '1', '--flush-interval=4', '-d', 'abc', a],
      ['-c', '1', '--no-drain', '-f', 'raw', a], ['-c', '1', '-q', '-f', 'raw', a], ['-c', '1', '-w', '-U', '-f', 'raw', a],
      ['-c', '1', '-w', '--image-opts', `driver=raw,file.filename=${a},read-only=on`], ['-c', '1', '--image-opts', `driver=raw,file.filename=${a}`],
      ['-c', '1', '--image-opts', `driver=qcow2,file.filename=${p('top.qcow2')},foo=bar`],
      ['-c', '0', '-d', '0', '-f', 'raw', a], ['-c', '1', '-d', '2', '-s', '1G', '-f', 'raw', a], ['-c', '1', '-d', '2147483647', '-f', 'raw', a],
      ['-c', '1', p('nobase.qcow2')], ['-c', '0', '-f', 'raw', p('empty.raw')], ['-c', '2', '-s', '512', '-f', 'raw', p('empty.raw')],
    ];
    for (const args of cases) await same(version, args, args.join(' '));
  });

  test(`${version}: request offsets wrap modulo the size`, async () => {
    const a = p('a.raw');
    // 4096-byte steps: request 244 (999424) passes the end of 1000448 bytes; with 7 KiB steps, request 279.
    for (const args of [['-c', '244'], ['-c', '245'], ['-S', '7k', '-c', '279'], ['-S', '7k', '-c', '280'], ['-s', '512', '-o', '999936', '-c', '1'],
      ['-s', '512', '-o', '999937', '-c', '1'], ['-o', '1000448', '-c', '1', '-s', '0'], ['-s', '2M', '-c', '1'], ['-s', '1000448', '-c', '3'],
      ['-s', '999', '-S', '3333', '-o', '12345', '-c', '2000']]) {
      await same(version, ['-d', '1', '-f', 'raw', ...args, a], args.join(' '));
    }
    // Over a backing chain, any format.
    await same(version, ['-c', '3000', '-s', '1000', '-S', '777', p('top.qcow2')], 'qcow2 over its backing file');
  });

  test(`${version}: writes of the pattern to raw images and qcow2 clusters`, async () => {
    const runs: [string, string[]][] = [
      ['a.raw', ['-w', '-c', '50', '--pattern', '0x41']], ['a.raw', ['-w', '-f', 'raw', '-c', '300', '-S', '5k', '--pattern', '7', '-o', '3000']],
      ['a.raw', ['-w', '-f', 'raw', '-c', '4', '-d', '2', '--flush-interval', '2', '--no-drain', '-t', 'writethrough']],
      // Past the file's end within its last sector (the file grows), and past the disk's end (fails).
      ['a.raw', ['-w', '-f', 'raw', '-c', '1', '-s', '512', '-o', '999936']], ['a.raw', ['-w', '-f', 'raw', '-c', '1', '-o', '999937']],
      ['full.qcow2', ['-w', '-c', '150', '-S', '5k', '--pattern', '9', '-o', '3000']], ['full.qcow2', ['-w', '-c', '1', '-s', '1M', '--pattern', '3']],
      // Allocated clusters, then clusters of the backing file: allocated as qemu does.
      ['top.qcow2', ['-w', '-c', '40', '-o', '64k', '-s', '64k']],
    ];
    for (const [image, args] of runs) {
      const q = p(`w-qemu-${image}`);
      const i = p(`w-instar-${image}`);
      copyFileSync(p(image), q);
      copyFileSync(p(image), i);
      const label = `${image} ${args.join(' ')}`;
      const qr = qemuRun(version, ['bench', ...args, q]);
      // A probed raw image: instar falls back to raw only with --unsafe-quirks (qemu's unsafe default).
      const ir = await instarRun(version, ['bench', ...args, i], { globals: ['--unsafe-quirks'] });
      assert.equal(ir.stderr.split(i).join(q), qr.stderr, `${label}: stderr`);
      assert.equal(masked(ir.stdout), masked(qr.stdout), `${label}: stdout`);
      assert.equal(ir.status, qr.status, `${label}: exit status`);
      assert.ok(readFileSync(i).equals(readFileSync(q)), `${label}: the written file`);
    }
  });

  test(`${version}: instar's refusals`, async () => {
    // A format instar does not write (allocating qcow2 runs: allocating.test.ts).
    const vdi = p('refused.vdi');
    assert.equal(qemuRun('10.0', ['convert', '-f', 'raw', '-O', 'vdi', p('a.raw'), vdi]).status, 0);
    const vdiBefore = readFileSync(vdi);
    const v = await instarRun(version, ['bench', '-w', '-c', '1', vdi]);
    assert.deepEqual([v.status, v.stdout], [1, '']);
    assert.equal(v.stderr, "qemu-img: instar's bench -w writes to raw and qcow2 images only (this is vdi); nothing was written\n");
    assert.ok(readFileSync(vdi).equals(vdiBefore));
    // A backing file outside the allowed tree.
    const e = await instarRun(version, ['bench', '-c', '1', p('evil.qcow2')]);
    assert.equal(e.status, 1);
    assert.match(e.stderr, /^qemu-img: Could not open '[^']*evil\.qcow2': Could not open backing file: .*\/etc\/passwd.*\n$/);
  });
}

test('7.2: -d 0 with requests to send, where qemu-img waits forever, stops with a message', async () => {
  const r = await instarRun('7.2', ['bench', '-c', '5', '-d', '0', '-f', 'raw', p('a.raw')]);
  assert.equal(r.status, 1);
  assert.equal(r.stdout, 'Sending 5 read requests, 4096 bytes each, 0 in parallel (starting at offset 0, step size 4096)\n');
  assert.equal(r.stderr, 'qemu-img: -d 0 sends no request: qemu-img waits forever here, instar stops\n');
});

test('through the sandbox: reads over a backing chain, a write, a failed request, a missing backing file', async () => {
  await same('10.0', ['-c', '2000', '-s', '1000', '-S', '777', p('top.qcow2')], 'qcow2 over its backing file', true);
  await same('7.2', ['-c', '245', '-d', '1', '-f', 'raw', p('a.raw')], 'failed request', true);
  await same('7.2', ['-c', '1', p('nobase.qcow2')], 'missing backing file', true);
  const q = p('s-qemu.raw');
  const i = p('s-instar.raw');
  copyFileSync(p('a.raw'), q);
  copyFileSync(p('a.raw'), i);
  const args = ['-w', '-f', 'raw', '-c', '100', '-S', '9k', '--pattern', '200'];
  const qr = qemuRun('10.0', ['bench', ...args, q]);
  const ir = await instarRun('10.0', ['bench', ...args, i], { sandboxed: true });
  assert.equal(masked(ir.stdout), masked(qr.stdout));
  assert.deepEqual([ir.status, ir.stderr], [qr.status, qr.stderr]);
  assert.ok(readFileSync(i).equals(readFileSync(q)));
});
