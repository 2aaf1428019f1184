// The library API, through the built package entry (dist/index.mjs), against qemu-img's JSON and files.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, runQemu } from '../helpers/oracles.ts';

const lib = (await import(join(ROOT, 'dist', 'index.mjs'))) as typeof import('../../src/index.ts');

/** A directory removed after the test, and qemu-img 10.0 (or qemu-io) run in it, asserted to succeed. */
function scratch(t: TestContext): { dir: string; q: (args: string[], tool?: 'qemu-img' | 'qemu-io') => string } {
  const dir = mkdtempSync(join(tmpdir(), 'instar-api-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const q = (args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img') => {
    const r = runQemu('10.0', args, { cwd: dir }, tool);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  return { dir, q };
}

test('info, map, compare, convert and inspect from the package entry', async (t) => {
  const { dir, q } = scratch(t);
  q(['create', '-q', '-f', 'qcow2', 'base.qcow2', '8M']);
  q(['-c', 'write -P 0x5a 1M 128k', 'base.qcow2'], 'qemu-io');
  q(['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']);
  q(['-c', 'write -P 0x11 4M 4k', 'top.qcow2'], 'qemu-io');
  const top = join(dir, 'top.qcow2');
  const common = { qemuVersion: '10.0' } as const;

  assert.deepEqual(await lib.info(top, common), JSON.parse(q(['info', '--output=json', top])));
  assert.deepEqual(await lib.info(top, { ...common, backingChain: true }), JSON.parse(q(['info', '--output=json', '--backing-chain', top])));
  assert.deepEqual(await lib.map(top, common), JSON.parse(q(['map', '--output=json', top])));

  const out = join(dir, 'out.raw');
  await lib.convert(top, out, common);
  q(['convert', '-O', 'raw', top, join(dir, 'expected.raw')]);
  assert.ok(readFileSync(out).equals(readFileSync(join(dir, 'expected.raw'))));
  assert.deepEqual(await lib.compare(top, out, { ...common, formatB: 'raw' }), { identical: true, message: 'Images are identical.' });
  assert.equal((await lib.compare(join(dir, 'base.qcow2'), top, common)).identical, false);

  await assert.rejects(lib.info(join(dir, 'missing.qcow2'), common), (e: unknown) => {
    assert.ok(e instanceof lib.InstarError);
    assert.equal(e.status, 1);
    assert.match(e.message, /Could not open .*missing\.qcow2.*No such file or directory/);
    return true;
  });
  const report = await lib.inspect(top);
  assert.equal(report.format, 'qcow2');
  assert.equal(report.safe, false, 'a backing file makes an upload unsafe');
});

test('create, resize, check and measure from the package entry', async (t) => {
  const { dir, q } = scratch(t);
  const common = { qemuVersion: '10.0', sandbox: 'none' } as const;
  const mine = join(dir, 'mine.qcow2');
  const theirs = join(dir, 'theirs.qcow2');

  await lib.create(mine, 'qcow2', '64M', { ...common, options: 'cluster_size=4096' });
  q(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', theirs, '64M']);
  assert.ok(readFileSync(mine).equals(readFileSync(theirs)), 'create: the same file');

  await lib.resize(mine, '+1G', common);
  q(['resize', '-q', theirs, '+1G']);
  assert.ok(readFileSync(mine).equals(readFileSync(theirs)), 'resize: the same file');
  await lib.resize(mine, '-512M', { ...common, shrink: true });
  q(['resize', '-q', '--shrink', theirs, '-512M']);
  assert.ok(readFileSync(mine).equals(readFileSync(theirs)), 'resize --shrink: the same file');

  q(['-c', 'write -P 1 0 1M', mine], 'qemu-io');
  assert.deepEqual(await lib.check(mine, common), { status: 0, report: JSON.parse(q(['check', '--output=json', mine])) });
  assert.deepEqual(await lib.measure({ file: mine }, { ...common, outputFormat: 'qcow2' }), JSON.parse(q(['measure', '--output=json', '-O', 'qcow2', mine])));
  assert.deepEqual(await lib.measure({ size: '10G' }, { ...common, outputFormat: 'qcow2', options: 'cluster_size=2M' }), JSON.parse(q(['measure', '--output=json', '-O', 'qcow2', '-o', 'cluster_size=2M', '--size', '10G'])));

  // A leak: a freed cluster whose refcount says 1. check reports it with status 3, check -r leaks repairs it.
  q(['-c', 'discard 512k 4k', mine], 'qemu-io');
  const leaky = join(dir, 'leaky.qcow2');
  copyFileSync(mine, leaky);
  const bytes = readFileSync(leaky);
  const refcountBlock = Number(bytes.readBigUInt64BE(Number(bytes.readBigUInt64BE(48))));
  let free = -1;
  for (let c = 0; c < bytes.length / 4096 && free < 0; c++) if (bytes.readUInt16BE(refcountBlock + 2 * c) === 0) free = c;
  assert.ok(free > 0, 'a free cluster inside the file');
  bytes.writeUInt16BE(1, refcountBlock + 2 * free);
  writeFileSync(leaky, bytes);
  const found = await lib.check(leaky, common);
  assert.equal(found.status, 3);
  assert.equal(found.report.leaks, 1);
  const fixed = await lib.check(leaky, { ...common, repair: 'leaks' });
  assert.equal(fixed.status, 0);
  assert.equal(fixed.report['leaks-fixed'], 1);

  await assert.rejects(lib.check(join(dir, 'missing.qcow2'), common), (e: unknown) => e instanceof lib.InstarError && e.status === 1);
  await assert.rejects(lib.create(join(dir, 'bad.qcow2'), 'qcow2', '1M', { ...common, options: 'cluster_size=3' }), (e: unknown) => e instanceof lib.InstarError && /Cluster size must be a power of two/.test(e.message));
});
