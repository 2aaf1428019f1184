// Encrypted qcow2 (legacy AES, crypt_method 1, and LUKS, crypt_method 2): info needs no key and
// equals both oracles'; the decrypted disk equals both oracles' convert output, in-process and
// through the CLI; without a key, reading fails with qemu's words.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { assertSameOutput } from '../differential/harness.ts';
import { runInstar } from '../helpers/oracles.ts';
import { ImageDir, SECRET, instarDecrypted, md5, oracleDecrypted, qemuAsync } from './helpers.ts';

const IMAGES: Record<string, string> = {
  'aes.qcow2': 'encrypt.format=aes,encrypt.key-secret=s0',
  'luks.qcow2': 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10',
  'luks-cbc.qcow2': 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,cluster_size=4096',
};

describe('encrypted qcow2 vs both oracles', () => {
  let images: ImageDir;
  before(async () => {
    images = new ImageDir('qcow2-crypt');
    await Promise.all(Object.entries(IMAGES).map(async ([name, options]) => {
      await qemuAsync(images, ['create', '--object', SECRET, '-f', 'qcow2', '-o', options, name, '8M']);
      // Data at unaligned guest offsets and across clusters, then a hole, then more data.
      await qemuAsync(images, ['--object', SECRET, '--image-opts', `driver=qcow2,encrypt.key-secret=s0,file.filename=${name}`,
        '-c', 'write -P 0xcd 100k 1M', '-c', 'write -P 0x11 5000k 70k', '-c', 'write -P 0x22 8187k 5k'], '10.0', 'qemu-io');
    }));
  });
  after(() => images.remove());

  for (const name of Object.keys(IMAGES)) {
    it(`${name}: info without a key equals both oracles' (human and JSON)`, async () => {
      await assertSameOutput(images.dir, ['info', name]);
      await assertSameOutput(images.dir, ['info', '--output=json', name]);
    });

    it(`${name}: decrypted disk equals both oracles' (in-process and CLI convert)`, () => {
      const opts = `driver=qcow2,encrypt.key-secret=s0,file.filename=${name}`;
      const want = oracleDecrypted(images, '10.0', opts);
      assert.equal(md5(oracleDecrypted(images, '7.2', opts)), md5(want));
      assert.equal(md5(instarDecrypted(images.path(name), 'qcow2')), md5(want));
      const r = runInstar(['convert', '--object', SECRET, '--image-opts', opts, '-O', 'raw', `instar-${name}.raw`], { cwd: images.dir });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(md5(readFileSync(images.path(`instar-${name}.raw`))), md5(want));
      assert.ok(want.includes(0xcd) && want.includes(0x22));
    });

    it(`${name}: convert without a key, with a wrong key, with an unknown secret id: the oracles' words`, async () => {
      await assertSameOutput(images.dir, ['convert', name, '-O', 'raw', 'never.raw']);
      await assertSameOutput(images.dir, ['convert', '--object', 'secret,id=s1,data=pass', '--image-opts', `driver=qcow2,encrypt.key-secret=s0,file.filename=${name}`, '-O', 'raw', 'never.raw']);
    });
  }

  it('LUKS in qcow2 with a wrong passphrase: the oracles\' message and status', async () => {
    await assertSameOutput(images.dir, ['convert', '--object', 'secret,id=s0,data=wrong', '--image-opts', 'driver=qcow2,encrypt.key-secret=s0,file.filename=luks.qcow2', '-O', 'raw', 'never.raw']);
  });

  it('LUKS key material outside the crypto header area: the oracles\' refusal', async () => {
    const bytes = readFileSync(images.path('luks.qcow2'));
    const ext = bytes.indexOf(Buffer.from([0x05, 0x37, 0xbe, 0x77]));
    assert.ok(ext > 0 && ext < 4096);
    bytes.writeBigUInt64BE(4096n, ext + 16); // the area's length: the header only, no key slots
    writeFileSync(images.path('short-area.qcow2'), bytes);
    await assertSameOutput(images.dir, ['convert', '--object', SECRET, '--image-opts', 'driver=qcow2,encrypt.key-secret=s0,file.filename=short-area.qcow2', '-O', 'raw', 'never.raw']);
  });

  it('legacy AES: a wrong passphrase decrypts to different bytes, as in qemu (no key check exists)', () => {
    assert.notEqual(md5(instarDecrypted(images.path('aes.qcow2'), 'qcow2', 'wrong')), md5(instarDecrypted(images.path('aes.qcow2'), 'qcow2')));
  });
});
