// LUKS images as a format of their own: info equals both oracles' (human and JSON), and the
// decrypted disk equals what both oracles' convert writes, for each cipher/mode/ivgen/hash mix
// that node:crypto can do; the CLI's convert (sandboxed) writes the same bytes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { assertSameOutput } from '../differential/harness.ts';
import { runInstar } from '../helpers/oracles.ts';
import { ImageDir, SECRET, instarDecrypted, makeLuks, md5, oracleDecrypted } from './helpers.ts';

const VARIANTS: Record<string, string> = {
  'xts-plain64-sha256.luks': 'cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256',
  'xts128-plain64-sha1.luks': 'cipher-alg=aes-128,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha1',
  'cbc-essiv-sha256.luks': 'cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha256',
  // aes-192 only in XTS (OpenSSL has no AES-192-XTS: built on ECB): in CBC/ECB its 96 000-byte key
  // material is not whole sectors and both oracles abort creating it.
  'xts192-plain64-sha256.luks': 'cipher-alg=aes-192,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256',
  'cbc-plain64-sha512.luks': 'cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=plain64,hash-alg=sha512',
  'cbc256-plain-sha384.luks': 'cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=plain,hash-alg=sha384',
  'ecb-sha224.luks': 'cipher-alg=aes-256,cipher-mode=ecb,ivgen-alg=plain64,hash-alg=sha224',
  'ctr-plain64-md5.luks': 'cipher-alg=aes-128,cipher-mode=ctr,ivgen-alg=plain64,hash-alg=md5',
};

describe('luks: info and decryption vs both oracles', () => {
  let images: ImageDir;
  before(async () => {
    images = new ImageDir('luks');
    await Promise.all([
      makeLuks(images, VARIANTS),
      // One image written by qemu-io too, over a size that is not a whole MiB.
      makeLuks(images, { 'io.luks': 'cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256' }, 3 * 1024 * 1024 + 512, 7),
    ]);
    images.qemu(['--object', SECRET, '--image-opts', 'driver=luks,key-secret=s0,file.filename=io.luks', '-c', 'write -P 0xab 4096 1M', '-c', 'write -P 0x5a 2049k 3k'],
      { tool: 'qemu-io', version: '10.0' });
  });
  after(() => images.remove());

  for (const name of [...Object.keys(VARIANTS), 'io.luks']) {
    it(`${name}: info (human, JSON, detected and -f luks) equals both oracles'`, async () => {
      await assertSameOutput(images.dir, ['info', name]);
      await assertSameOutput(images.dir, ['info', '--output=json', '-f', 'luks', name]);
    });

    it(`${name}: the decrypted disk equals both oracles' convert output`, () => {
      const opts = `driver=luks,key-secret=s0,file.filename=${name}`;
      const want = oracleDecrypted(images, '10.0', opts);
      assert.equal(md5(oracleDecrypted(images, '7.2', opts)), md5(want));
      assert.equal(md5(instarDecrypted(images.path(name), 'luks')), md5(want));
      assert.ok(want.some((b) => b !== 0), 'the image holds data');
    });
  }

  it('CLI convert (default sandbox, and --sandbox=none) writes the oracles\' bytes', () => {
    for (const [name, sandbox] of [['xts-plain64-sha256.luks', []], ['cbc-essiv-sha256.luks', ['--sandbox=none']], ['io.luks', []]] as const) {
      const opts = `driver=luks,key-secret=s0,file.filename=${name}`;
      const out = `instar-${name}.raw`;
      const r = runInstar(['convert', ...sandbox, '--object', SECRET, '--image-opts', opts, '-O', 'raw', out], { cwd: images.dir });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(md5(readFileSync(images.path(out))), md5(oracleDecrypted(images, '10.0', opts)));
    }
  });

  it('the secret from a file and in base64 unlocks the same way', () => {
    writeFileSync(images.path('pw.txt'), 'pass');
    writeFileSync(images.path('pw.b64'), 'cGFzcw==\n');
    const opts = 'driver=luks,key-secret=k,file.filename=xts-plain64-sha256.luks';
    for (const object of ['secret,id=k,file=pw.txt', 'secret,id=k,file=pw.b64,format=base64', 'secret,id=k,data=cGFzcw==,format=base64']) {
      const r = runInstar(['convert', '--object', object, '--image-opts', opts, '-O', 'raw', 'k.raw'], { cwd: images.dir });
      assert.equal(r.status, 0, `${object}: ${r.stderr}`);
      assert.equal(md5(readFileSync(images.path('k.raw'))), md5(readFileSync(images.path('xts-plain64-sha256.luks.src'))));
    }
  });
});
