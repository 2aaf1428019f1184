// The library API, through the built package entry (dist/index.mjs), against qemu-img's JSON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, runQemu } from '../helpers/oracles.ts';

const lib = (await import(join(ROOT, 'dist', 'index.mjs'))) as typeof import('../../src/index.ts');

test('info, map, compare, convert and inspect from the package entry', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'instar-api-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const q = (args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img') => {
    const r = runQemu('10.0', args, { cwd: dir }, tool);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
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
