// check -r's command line and its answer per format, against both oracles: -U refused (after the
// format name, before the file), a file the user may not write, a probed raw image (qemu warns,
// then cannot check), formats whose checker refuses to fix (vdi, vmdk: exit 63), and clean images
// of the formats that repair (qcow2, qed, parallels, vhdx), which -r leaves as they were.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { INSTAR_ALIAS, VERSIONS, oracle, runQemu } from '../helpers/oracles.ts';
import { RepairDirs, assertSameRun } from './repair-harness.ts';

const dirs = new RepairDirs();
const images: Record<string, Uint8Array> = {};

before(() => {
  for (const format of ['qcow2', 'qed', 'parallels', 'vhdx', 'vdi', 'vmdk', 'raw']) {
    const path = join(dirs.root, `c.${format}`);
    assert.equal(runQemu('7.2', ['create', '-q', '-f', format, path, '1M']).status, 0);
    images[format] = new Uint8Array(readFileSync(path));
  }
});
after(() => dirs.remove());

const CASES: [string, string, string[], string[]?][] = [
  ['qcow2', 'c.qcow2', ['check', '-r', 'leaks', 'c.qcow2']],
  ['qcow2', 'c.qcow2', ['check', '-r', 'all', '--output=json', 'c.qcow2']],
  ['qcow2', 'c.qcow2', ['check', '-U', '-r', 'all', 'c.qcow2']],
  ['qcow2', 'c.qcow2', ['check', '-U', '-r', 'all', 'missing.qcow2']],
  ['qcow2', 'c.qcow2', ['check', '-U', '-r', 'all', '-f', 'bogus', 'c.qcow2']],
  ['qcow2', 'c.qcow2', ['check', '-r', 'all', 'missing.qcow2']],
  ['qcow2', 'c.qcow2', ['check', '-r', 'leaks', '--image-opts', 'driver=qcow2,file.filename=c.qcow2,read-only=on']],
  ['qcow2', 'c.qcow2', ['check', '-r', 'leaks', '--image-opts', 'driver=qcow2,file.filename=c.qcow2,read-only=bogus']],
  ['qcow2', 'c.qcow2', ['check', '-r', 'leaks', '--image-opts', 'driver=qcow2,file.filename=c.qcow2,force-share=yes']],
  ['qcow2', 'c.qcow2', ['check', '-U', '-r', 'leaks', '--image-opts', 'driver=qcow2,file.filename=c.qcow2,read-only=on']],
  ['qcow2', 'c.qcow2', ['check', '-r', 'leaks', '--image-opts', 'driver=qcow2,file.filename=c.qcow2,read-only=off']],
  ['qed', 'c.qed', ['check', '-r', 'all', 'c.qed']],
  ['parallels', 'c.parallels', ['check', '-r', 'leaks', '--output=json', 'c.parallels']],
  ['vhdx', 'c.vhdx', ['check', '-r', 'all', 'c.vhdx']],
  ['vdi', 'c.vdi', ['check', '-r', 'all', 'c.vdi']],
  ['vmdk', 'c.vmdk', ['check', '-r', 'leaks', 'c.vmdk']],
  // qemu's fallback to raw for an unknown file is one of instar's --unsafe-quirks.
  ['raw', 'c.raw', ['check', '-r', 'all', 'c.raw'], ['--unsafe-quirks']],
  ['raw', 'c.raw', ['check', '-r', 'all', '-f', 'raw', 'c.raw']],
];

for (const [format, name, args, instarArgs] of CASES) {
  test(`qemu-img ${args.join(' ')}`, () => {
    for (const v of VERSIONS) {
      const r = dirs.run(v, name, images[format], args, { sandboxed: v === '10.0', instarArgs });
      assertSameRun(r, `${v} ${args.join(' ')}`);
      assert.ok(r.instarFile.equals(Buffer.from(images[format])), 'a clean image is left as it was');
    }
  });
}

test('check -r refuses what qemu would repair and instar cannot (a parallels duplicate cluster, qemu 10.0), writing nothing', () => {
  const path = join(dirs.root, 'dup.parallels');
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'parallels', path, '4M']).status, 0);
  assert.equal(runQemu('7.2', ['-f', 'parallels', '-c', 'write -P 0x11 3M 1M', path], {}, 'qemu-io').status, 0);
  const bytes = readFileSync(path);
  // BAT entry 0 names entry 3's cluster: qemu 10.0 copies it elsewhere.
  bytes.copy(bytes, 64, 64 + 4 * 3, 64 + 4 * 4);
  const r = dirs.run('10.0', 'x.parallels', bytes, ['check', '-r', 'all', 'x.parallels'], { sandboxed: true });
  assert.equal(r.instar.stderr, 'qemu-img: instar cannot repair this parallels image (qemu 10.0 repairs duplicate clusters by moving data, which instar does not); nothing was written\n');
  assert.equal(r.instar.status, 1);
  assert.ok(r.instarFile.equals(bytes), 'the file is unchanged');
  assert.equal(r.qemu.status, 0, 'qemu repairs it');
});

test('check -r on a file the user may not write: qemu\'s open error', () => {
  const r = dirs.run('10.0', 'c.qcow2', images.qcow2, ['check', '-r', 'all', 'c.qcow2']);
  for (const path of [r.qemuPath, r.instarPath]) chmodSync(path, 0o444);
  // The user must reach the file, not write it.
  chmodSync(dirs.root, 0o755);
  const asNobody = (file: string, args: string[], cwd: string) =>
    spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', file, ...args], { cwd: join(cwd, '..', '..'), encoding: 'utf8' });
  for (const v of VERSIONS) {
    const args = ['check', '-r', 'leaks', 'q/c.qcow2'];
    const qemu = asNobody(oracle(v), args, r.qemuPath);
    const instar = asNobody(process.execPath, [INSTAR_ALIAS, ...args, '--qemu-version', v], r.qemuPath);
    assert.equal(qemu.stderr, "qemu-img: Could not open 'q/c.qcow2': Could not open 'q/c.qcow2': Permission denied\n");
    assert.equal(instar.stderr, qemu.stderr);
    assert.equal(instar.status, qemu.status);
    assert.equal(instar.stdout, '');
  }
});
