// resize --preallocation=falloc: qemu's file protocol reserves the file's growth with fallocate
// (unwritten extents: zeros that SEEK_DATA, so map, calls holes, yet counted as allocated). The
// guest cannot call fallocate; the host reserves what the guest's resize left as holes. Compared
// with both oracles: the bytes and the map qemu prints of the result, raw and qcow2.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { VERSIONS, runInstar, runQemu } from '../helpers/oracles.ts';

const dir = new ImageDir('resize-falloc');
after(() => dir.remove());

const map = (format: string, name: string) => runQemu('7.2', ['map', '--output=json', '-f', format, dir.path(name)]).stdout;

for (const format of ['raw', 'qcow2']) {
  test(`${format}: the growth reserved as qemu reserves it`, () => {
    dir.img('create', '-q', '-f', format, `${format}.base`, '1M');
    dir.io('-f', format, '-c', 'write -P 9 0 64k', `${format}.base`);
    for (const version of VERSIONS) {
      const q = `${format}-${version}.q`;
      const i = `${format}-${version}.i`;
      copyFileSync(dir.path(`${format}.base`), dir.path(q));
      copyFileSync(dir.path(`${format}.base`), dir.path(i));
      const args = ['resize', '-q', '-f', format, '--preallocation=falloc'];
      assert.equal(runQemu(version, [...args, q, '9M'], { cwd: dir.dir }).status, 0);
      const r = runInstar(['--qemu-version', version, ...args, i, '9M'], { cwd: dir.dir });
      assert.equal(r.status, 0, r.stderr);
      assert.ok(readFileSync(dir.path(i)).equals(readFileSync(dir.path(q))), `${version}: bytes`);
      assert.equal(map(format, i), map(format, q), `${version}: allocation`);
    }
  });
}
