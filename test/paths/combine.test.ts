import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasProtocol, pathCombine, combinePath, referencedPath } from '../../src/host/paths/combine.ts';

test('hasProtocol follows qemu: the first ":" comes before any "/"', () => {
  for (const name of ['nbd://h:1', 'nbd+unix:///x', 'json:{}', 'file:/etc/passwd', 'http://x', 'a b:c', 'x_y:z', ':x', 'iscsi:']) {
    assert.equal(hasProtocol(name), true, name);
  }
  for (const name of ['/abs:x', 'dir/a:b', 'plain', './nbd:x', '']) {
    assert.equal(hasProtocol(name), false, name);
  }
});

test('pathCombine is qemu path_combine: directory as spelled, base protocol kept', () => {
  assert.equal(pathCombine('dir/a.qcow2', 'b'), 'dir/b');
  assert.equal(pathCombine('a.qcow2', 'b'), 'b');
  assert.equal(pathCombine('/a.qcow2', 'b'), '/b');
  assert.equal(pathCombine('dir/../x/a', '../b'), 'dir/../x/../b');
  assert.equal(pathCombine('dir/a', '/abs'), '/abs');
  assert.equal(pathCombine('file:a', 'b'), 'file:b');
  assert.equal(pathCombine('file:d/a', 'b'), 'file:d/b');
  // No protocol check on the name: a VMDK extent "nbd:x" next to "d/v.vmdk" is the file d/nbd:x.
  assert.equal(pathCombine('d/v.vmdk', 'nbd:x'), 'd/nbd:x');
});

test('combinePath (backing rule) leaves protocol and absolute names alone', () => {
  assert.equal(combinePath('d/a.qcow2', 'nbd://127.0.0.1:1'), 'nbd://127.0.0.1:1');
  assert.equal(combinePath('d/a.qcow2', '/etc/passwd'), '/etc/passwd');
  assert.equal(combinePath('d/a.qcow2', '../../etc/passwd'), 'd/../../etc/passwd');
});

test('referencedPath: data files are relative to the cwd, extents use path_combine', () => {
  assert.equal(referencedPath('d/x.qcow2', 'dat.raw', 'data-file'), 'dat.raw');
  assert.equal(referencedPath('d/x.vmdk', 'x-flat.vmdk', 'extent'), 'd/x-flat.vmdk');
  assert.equal(referencedPath('d/x.qcow2', 'b.qcow2', 'backing'), 'd/b.qcow2');
});
