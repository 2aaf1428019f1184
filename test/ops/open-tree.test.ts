// openTree: the guest asks for the files an image names and reads through the granted chain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTree, MissingFilesError } from '../../src/ops/open-tree.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import type { OpContext } from '../../src/ops/types.ts';
import type { DeviceSpec } from '../../src/protocol/messages.ts';
import { runQemu } from '../helpers/oracles.ts';

function context(files: { path: string; spec: Omit<DeviceSpec, 'fd' | 'writable'> }[]): { ctx: OpContext; close: () => void } {
  const fds = files.map((f) => openSync(f.path, 'r'));
  const devices = files.map((f, i) => ({ spec: { ...f.spec, fd: i, writable: false }, dev: new FdDevice(fds[i], false) }));
  return { ctx: { devices, emit: () => {} }, close: () => fds.forEach((fd) => closeSync(fd)) };
}

test('a two-level chain: backing asked for by name, then read through', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'instar-tree-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const base = Buffer.alloc(4 << 20);
  for (let i = 0; i < base.length; i += 4096) base.fill(i / 4096 % 251, i, i + 512);
  writeFileSync(join(dir, 'base.raw'), base);
  const sh = (args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img') => {
    const r = runQemu('10.0', args, { cwd: dir }, tool);
    assert.equal(r.status, 0, r.stderr);
  };
  sh(['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'mid.qcow2']);
  sh(['-c', 'write -P 0xab 64k 64k', 'mid.qcow2'], 'qemu-io');
  sh(['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2']);
  sh(['-c', 'write -P 0xcd 1M 4k', '-c', 'write -z 2M 64k', 'top.qcow2'], 'qemu-io');
  sh(['convert', '-O', 'raw', 'top.qcow2', 'expected.raw']);

  const alone = context([{ path: join(dir, 'top.qcow2'), spec: { role: 'input' } }]);
  assert.throws(() => openTree(alone.ctx, 0, {}), (e: unknown) => {
    assert.ok(e instanceof MissingFilesError);
    assert.deepEqual(e.files, [{ role: 'backing', name: 'mid.qcow2', referrer: 0, format: 'qcow2' }]);
    return true;
  });
  alone.close();

  const two = context([
    { path: join(dir, 'top.qcow2'), spec: { role: 'input' } },
    { path: join(dir, 'mid.qcow2'), spec: { role: 'backing', name: 'mid.qcow2', referrer: 0 } },
  ]);
  assert.throws(() => openTree(two.ctx, 0, {}), (e: unknown) => e instanceof MissingFilesError && e.files[0].name === 'base.raw' && e.files[0].referrer === 1);
  two.close();

  const all = context([
    { path: join(dir, 'top.qcow2'), spec: { role: 'input' } },
    { path: join(dir, 'mid.qcow2'), spec: { role: 'backing', name: 'mid.qcow2', referrer: 0 } },
    { path: join(dir, 'base.raw'), spec: { role: 'backing', name: 'base.raw', referrer: 1 } },
  ]);
  const image = openTree(all.ctx, 0, {});
  const got = Buffer.alloc(image.virtualSize);
  image.read(got, 0);
  all.close();
  assert.ok(got.equals(readFileSync(join(dir, 'expected.raw'))), 'chain reads as qemu-img convert does');
  assert.equal(openTree(context([{ path: join(dir, 'top.qcow2'), spec: { role: 'input' } }]).ctx, 0, { noBacking: true }).format, 'qcow2');
});
