// combine.ts's rules checked against the oracles: where qemu looks for a backing file, a qcow2
// data file and a VMDK extent named relatively by an image in a subdirectory.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, renameSync, copyFileSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';
import { combinePath, referencedPath } from '../../src/host/paths/combine.ts';

const base = realpathSync(mkdtempSync(join(tmpdir(), 'instar-combine-')));
after(() => rmSync(base, { recursive: true, force: true }));
const d = join(base, 'd');
mkdirSync(d);

function qemu(version: (typeof VERSIONS)[number], args: string[], cwd: string, tool: 'qemu-img' | 'qemu-io' = 'qemu-img') {
  return runQemu(version, args, { cwd, timeoutMs: 20_000 }, tool);
}

test('backing: relative to the referring image\'s directory as spelled', () => {
  assert.equal(qemu('7.2', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'sub/../b.qcow2', '-F', 'qcow2', 'd/a.qcow2', '1M'], base).status, 0);
  for (const v of VERSIONS) {
    const r = qemu(v, ['info', 'd/a.qcow2'], base);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`backing file: sub/\\.\\./b\\.qcow2 \\(actual path: ${combinePath('d/a.qcow2', 'sub/../b.qcow2').replace(/[./]/g, '\\$&')}\\)`));
  }
});

test('data file: relative to the current directory, not to the image', () => {
  assert.equal(qemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=dat.raw', 'x.qcow2', '1M'], d).status, 0);
  const expected = referencedPath('d/x.qcow2', 'dat.raw', 'data-file');
  for (const v of VERSIONS) {
    const missing = qemu(v, ['-c', 'read 0 512', 'd/x.qcow2'], base, 'qemu-io');
    assert.match(missing.stderr, new RegExp(`Could not open '${expected}': No such file or directory`));
    copyFileSync(join(d, 'dat.raw'), join(base, expected));
    const found = qemu(v, ['-c', 'read 0 512', 'd/x.qcow2'], base, 'qemu-io');
    assert.match(found.stdout, /read 512\/512 bytes/, found.stderr);
    rmSync(join(base, expected));
  }
});

test('VMDK extent: relative to the descriptor\'s directory (path_combine)', () => {
  assert.equal(qemu('7.2', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'v.vmdk', '1M'], d).status, 0);
  renameSync(join(d, 'v-flat.vmdk'), join(d, 'moved'));
  for (const v of VERSIONS) {
    const r = qemu(v, ['info', 'd/v.vmdk'], base);
    assert.equal(r.stderr, `qemu-img: Could not open 'd/v.vmdk': Could not open '${referencedPath('d/v.vmdk', 'v-flat.vmdk', 'extent')}': No such file or directory\n`);
  }
});
