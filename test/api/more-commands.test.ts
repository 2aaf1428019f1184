// The library's check, measure, create and resize, through the built package entry, against
// what qemu-img 10.0 prints and writes for the same requests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, runQemu } from '../helpers/oracles.ts';

const lib = (await import(join(ROOT, 'dist', 'index.mjs'))) as typeof import('../../src/index.ts');

test('create, resize, check and measure from the package entry', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'instar-api-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const q = (args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img') => {
    const r = runQemu('10.0', args, { cwd: dir }, tool);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
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
