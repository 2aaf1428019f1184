// qcow (v1) with qemu's legacy AES encryption, opened as qemu takes it:
// --image-opts driver=qcow,encrypt.key-secret=ID,file.filename=… . info, map and convert equal
// both oracles (a wrong passphrase decrypts to the same garbage, as qemu's does: legacy AES has
// no key check); without the key, reading fails in qemu's words.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { assertSameOutput } from '../differential/harness.ts';
import { runInstar, runQemu } from '../helpers/oracles.ts';
import { ImageDir, SECRET, md5, oracleDecrypted, qemuAsync } from './helpers.ts';

const OPTS = 'driver=qcow,encrypt.key-secret=s0,file.filename=v1.qcow';

describe('encrypted qcow v1 with --image-opts vs both oracles', () => {
  let images: ImageDir;
  before(async () => {
    images = new ImageDir('qcow1-crypt');
    await qemuAsync(images, ['create', '--object', SECRET, '-f', 'qcow', '-o', 'encrypt.format=aes,encrypt.key-secret=s0', 'v1.qcow', '4M']);
    await qemuAsync(images, ['--object', SECRET, '--image-opts', OPTS, '-c', 'write -P 0x5c 4096 100k', '-c', 'write -P 0x11 1M 3000', '-c', 'write -P 0x22 4095k 1k'], '10.0', 'qemu-io');
  });
  after(() => images.remove());

  it('info and map with the key equal both oracles\'', async () => {
    await assertSameOutput(images.dir, ['info', '--object', SECRET, '--image-opts', OPTS]);
    await assertSameOutput(images.dir, ['info', '--output=json', '--object', SECRET, '--image-opts', OPTS]);
    await assertSameOutput(images.dir, ['map', '--object', SECRET, '--image-opts', OPTS]);
    await assertSameOutput(images.dir, ['map', '--output=json', '--object', SECRET, '--image-opts', OPTS]);
  });

  it('convert -O raw (sandboxed) writes the oracles\' bytes, with the right and a wrong passphrase', () => {
    for (const secret of [SECRET, 'secret,id=s0,data=wrong']) {
      const args = ['convert', '--object', secret, '--image-opts', OPTS, '-O', 'raw'];
      for (const version of ['7.2', '10.0'] as const) assert.equal(runQemu(version, [...args, `q${version}.raw`], { cwd: images.dir }).status, 0);
      const want = readFileSync(images.path('q10.0.raw'));
      assert.equal(md5(readFileSync(images.path('q7.2.raw'))), md5(want));
      const r = runInstar([...args, 'out.raw'], { cwd: images.dir });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(md5(readFileSync(images.path('out.raw'))), md5(want), secret);
      if (secret === SECRET) assert.ok(want.subarray(4096, 4096 + 100 * 1024).every((b) => b === 0x5c));
      else assert.notEqual(md5(want), md5(oracleDecrypted(images, '10.0', OPTS)));
    }
  });

  it('a wrong passphrase and a missing key: as both oracles', async () => {
    await assertSameOutput(images.dir, ['convert', '--object', 'secret,id=s0,data=wrong', '--image-opts', OPTS, '-O', 'raw', 'wrong.raw']);
    await assertSameOutput(images.dir, ['compare', '--object', 'secret,id=s0,data=wrong', '--image-opts', OPTS, OPTS]);
    await assertSameOutput(images.dir, ['convert', 'v1.qcow', '-O', 'raw', 'never.raw']);
    await assertSameOutput(images.dir, ['convert', '--object', SECRET, '--image-opts', 'driver=qcow,encrypt.key-secret=nope,file.filename=v1.qcow', '-O', 'raw', 'never.raw']);
  });
});
