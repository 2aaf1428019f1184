// Secrets encrypted with another secret (--object secret,…,keyid=ID,iv=…): AES-256-CBC under the
// key secret, as qemu decrypts them. The ciphertexts are made here with node:crypto's encryption
// (PKCS#7 padding); every case is compared with both oracles, errors word for word.
import { after, before, describe, it } from 'node:test';
import { createCipheriv } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { assertSameOutput } from '../differential/harness.ts';
import { ImageDir, makeLuks } from './helpers.ts';

const KEY = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
const IV = Buffer.from('0f0e0d0c0b0a09080706050403020100', 'hex');
const encrypt = (plain: string, key = KEY, iv = IV): Buffer => {
  const c = createCipheriv('aes-256-cbc', key, iv);
  return Buffer.concat([c.update(plain), c.final()]);
};
const KEY_OBJ = `secret,id=k,data=${KEY.toString('base64')},format=base64`;
const open = 'driver=luks,key-secret=s0,file.filename=v.luks';

describe('secrets with keyid/iv vs both oracles', () => {
  let images: ImageDir;
  before(async () => {
    images = new ImageDir('secret-keyid');
    await makeLuks(images, { 'v.luks': 'cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256' }, 1024 * 1024);
    writeFileSync(images.path('ct.bin'), encrypt('pass'));
    writeFileSync(images.path('ct.b64'), encrypt('pass').toString('base64'));
  });
  after(() => images.remove());

  const iv = IV.toString('base64');
  const cases: [string, string[]][] = [
    ['base64 data decrypts to the passphrase', [KEY_OBJ, `secret,id=s0,data=${encrypt('pass').toString('base64')},format=base64,keyid=k,iv=${iv}`]],
    ['raw ciphertext from a file', [KEY_OBJ, `secret,id=s0,file=ct.bin,keyid=k,iv=${iv}`]],
    ['base64 ciphertext from a file', [KEY_OBJ, `secret,id=s0,file=ct.b64,format=base64,keyid=k,iv=${iv}`]],
    ['a wrong inner passphrase', [KEY_OBJ, `secret,id=s0,data=${encrypt('nope').toString('base64')},format=base64,keyid=k,iv=${iv}`]],
    ['no iv', [KEY_OBJ, `secret,id=s0,data=${encrypt('pass').toString('base64')},format=base64,keyid=k`]],
    ['a short iv', [KEY_OBJ, `secret,id=s0,data=${encrypt('pass').toString('base64')},format=base64,keyid=k,iv=AAAA`]],
    ['a bad base64 iv', [KEY_OBJ, `secret,id=s0,data=${encrypt('pass').toString('base64')},format=base64,keyid=k,iv=@@`]],
    ['a key that is not 32 bytes', ['secret,id=k,data=short', `secret,id=s0,data=${encrypt('pass').toString('base64')},format=base64,keyid=k,iv=${iv}`]],
    ['ciphertext not whole blocks', [KEY_OBJ, `secret,id=s0,data=abcde,keyid=k,iv=${iv}`]],
    ['bad padding', [KEY_OBJ, `secret,id=s0,data=${Buffer.alloc(32).toString('base64')},format=base64,keyid=k,iv=${iv}`]],
    ['an unknown key id', [KEY_OBJ, `secret,id=s0,data=x,keyid=nope,iv=${iv}`]],
  ];
  for (const [what, objects] of cases) {
    it(`${what}: convert, info and compare as both oracles`, async () => {
      const args = objects.flatMap((o) => ['--object', o]);
      await assertSameOutput(images.dir, ['convert', ...args, '--image-opts', open, '-O', 'raw', 'out.raw']);
      await assertSameOutput(images.dir, ['info', ...args, 'v.luks']);
      await assertSameOutput(images.dir, ['compare', ...args, '--image-opts', open, open]);
    });
  }
});
