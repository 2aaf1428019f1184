// Ciphers qemu's LUKS takes beyond node:crypto's defaults: aes-192 in XTS (built on AES-192-ECB),
// cast5-128 in CBC and ECB (OpenSSL's legacy provider, which the sandboxed guest loads), Serpent
// and Twofish (written from their specifications) in XTS, CBC (ESSIV too), ECB and CTR (CAST5 too,
// on the block function: node:crypto has no CTR for them), as luks and as
// qcow2 encrypt.format=luks. info equals both oracles'; the sandboxed CLI's convert writes the
// bytes both oracles' convert writes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { assertSameOutput } from '../differential/harness.ts';
import { spawnSync } from 'node:child_process';
import { INSTAR_ALIAS, runInstar } from '../helpers/oracles.ts';
import { ImageDir, SECRET, instarDecrypted, makeLuks, md5, oracleDecrypted, qemuAsync } from './helpers.ts';
import { tiered } from '../helpers/long.ts';

const ALL_LUKS: Record<string, string> = {
  'aes192-xts.luks': 'cipher-alg=aes-192,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256',
  'cast5-cbc.luks': 'cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=plain64,hash-alg=sha256',
  'cast5-ecb.luks': 'cipher-alg=cast5-128,cipher-mode=ecb,ivgen-alg=plain,hash-alg=sha1',
  'serpent128-xts.luks': 'cipher-alg=serpent-128,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256',
  'serpent192-xts.luks': 'cipher-alg=serpent-192,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha1',
  'serpent256-cbc-essiv.luks': 'cipher-alg=serpent-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha256',
  'serpent128-ecb.luks': 'cipher-alg=serpent-128,cipher-mode=ecb,ivgen-alg=plain64,hash-alg=sha256',
  'twofish256-xts.luks': 'cipher-alg=twofish-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha512',
  'twofish192-xts.luks': 'cipher-alg=twofish-192,cipher-mode=xts,ivgen-alg=plain,hash-alg=sha256',
  'twofish128-cbc-essiv.luks': 'cipher-alg=twofish-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha256',
  'twofish128-ecb.luks': 'cipher-alg=twofish-128,cipher-mode=ecb,ivgen-alg=plain64,hash-alg=sha256',
  'serpent128-ctr.luks': 'cipher-alg=serpent-128,cipher-mode=ctr,ivgen-alg=plain64,hash-alg=sha256',
  'twofish256-ctr.luks': 'cipher-alg=twofish-256,cipher-mode=ctr,ivgen-alg=plain,hash-alg=sha256',
  'cast5-ctr.luks': 'cipher-alg=cast5-128,cipher-mode=ctr,ivgen-alg=plain64,hash-alg=sha256',
};
/**
 * Each image costs qemu a PBKDF benchmark to create. The short tier keeps one per cipher family and
 * mode kind (the in-process test's three included); the long tier (npm run test:long) has them all.
 */
const SHORT = new Set(['aes192-xts.luks', 'cast5-cbc.luks', 'serpent256-cbc-essiv.luks', 'serpent128-ecb.luks', 'twofish256-xts.luks', 'twofish256-ctr.luks']);
const LUKS = Object.fromEntries(tiered(Object.entries(ALL_LUKS), ([name]) => SHORT.has(name)));
const QCOW2: Record<string, string> = {
  'aes192-xts.qcow2': 'encrypt.cipher-alg=aes-192,encrypt.cipher-mode=xts',
  'cast5-cbc.qcow2': 'encrypt.cipher-alg=cast5-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain64',
  'serpent256-xts.qcow2': 'encrypt.cipher-alg=serpent-256,encrypt.cipher-mode=xts',
  'twofish128-cbc.qcow2': 'encrypt.cipher-alg=twofish-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256',
};

describe('more LUKS ciphers (luks and qcow2) vs both oracles', () => {
  let images: ImageDir;
  before(async () => {
    images = new ImageDir('more-ciphers');
    // A few at a time: qemu-img measures PBKDF2 speed in CPU time while creating each image, and
    // a loaded machine running many creations at once makes each take minutes.
    const entries = Object.entries(LUKS);
    for (let i = 0; i < entries.length; i += 4) await makeLuks(images, Object.fromEntries(entries.slice(i, i + 4)), 2 * 1024 * 1024, 3);
    await Promise.all([
      ...Object.entries(QCOW2).map(async ([name, options]) => {
        await qemuAsync(images, ['create', '--object', SECRET, '-f', 'qcow2', '-o', `encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,${options}`, name, '4M']);
        await qemuAsync(images, ['--object', SECRET, '--image-opts', `driver=qcow2,encrypt.key-secret=s0,file.filename=${name}`,
          '-c', 'write -P 0xcd 100k 1M', '-c', 'write -P 0x22 4091k 5k'], '10.0', 'qemu-io');
      }),
    ]);
  });
  after(() => images.remove());

  const cases = [...Object.keys(LUKS).map((n) => [n, 'luks'] as const), ...Object.keys(QCOW2).map((n) => [n, 'qcow2'] as const)];
  for (const [name, driver] of cases) {
    it(`${name}: info equals both oracles'; sandboxed convert writes the oracles' bytes`, async () => {
      await assertSameOutput(images.dir, ['info', '--output=json', name]);
      const key = driver === 'luks' ? 'key-secret' : 'encrypt.key-secret';
      const opts = `driver=${driver},${key}=s0,file.filename=${name}`;
      const want = oracleDecrypted(images, '10.0', opts);
      assert.equal(md5(oracleDecrypted(images, '7.2', opts)), md5(want));
      assert.ok(want.some((b) => b !== 0));
      const r = runInstar(['convert', '--object', SECRET, '--image-opts', opts, '-O', 'raw', `${name}.raw`], { cwd: images.dir });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(md5(readFileSync(images.path(`${name}.raw`))), md5(want));
    });
  }

  it('in-process, aes-192-xts and serpent decrypt; cast5 needs the legacy provider, which the CLI program starts with, and says so when absent', () => {
    const want = oracleDecrypted(images, '10.0', 'driver=luks,key-secret=s0,file.filename=aes192-xts.luks');
    assert.equal(md5(instarDecrypted(images.path('aes192-xts.luks'), 'luks')), md5(want));
    const serpent = oracleDecrypted(images, '10.0', 'driver=luks,key-secret=s0,file.filename=serpent256-cbc-essiv.luks');
    assert.equal(md5(instarDecrypted(images.path('serpent256-cbc-essiv.luks'), 'luks')), md5(serpent));
    // The CLI run as a program starts node with the legacy provider (scripts/build.mjs): cast5 in-process too.
    const cast5 = oracleDecrypted(images, '10.0', 'driver=luks,key-secret=s0,file.filename=cast5-cbc.luks');
    const r = spawnSync(INSTAR_ALIAS, ['convert', '--object', SECRET, '--image-opts', 'driver=luks,key-secret=s0,file.filename=cast5-cbc.luks', '-O', 'raw', 'cast5-none.raw'],
      { cwd: images.dir, encoding: 'utf8', env: { ...process.env, INSTAR_SANDBOX: 'none' } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(md5(readFileSync(images.path('cast5-none.raw'))), md5(cast5));
    if (process.execArgv.includes('--openssl-legacy-provider')) return;
    assert.throws(() => instarDecrypted(images.path('cast5-cbc.luks'), 'luks'), /instar cannot decrypt cipher cast5-128 here: node:crypto was started without OpenSSL's legacy provider/);
  });
});
