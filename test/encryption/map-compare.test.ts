// map and compare on encrypted images read them, so they need the key as in qemu: with it, the
// same extents (no host offsets for encrypted data) and verdicts as both oracles; without it or
// with a wrong one, the same message and status.
import { after, before, describe, it } from 'node:test';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { assertSameOutput } from '../differential/harness.ts';
import assert from 'node:assert/strict';
import { runInstar, VERSIONS } from '../helpers/oracles.ts';
import { ImageDir, SECRET, makeLuks, oracleDecrypted, qemuAsync } from './helpers.ts';
import { patternBytes } from '../convert/helpers.ts';

const LUKS = 'driver=luks,key-secret=s0,file.filename=d.luks';
const AES = 'driver=qcow2,encrypt.key-secret=s0,file.filename=aes.qcow2';

describe('map and compare on encrypted images vs both oracles', () => {
  let images: ImageDir;
  before(async () => {
    images = new ImageDir('crypt-map');
    await Promise.all([
      makeLuks(images, { 'd.luks': 'cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256' }, 2 * 1024 * 1024, 3),
      (async () => {
        await qemuAsync(images, ['create', '--object', SECRET, '-f', 'qcow2', '-o', 'encrypt.format=aes,encrypt.key-secret=s0', 'aes.qcow2', '2M']);
        await qemuAsync(images, ['--object', SECRET, '--image-opts', AES, '-c', 'write -P 0x33 64k 200k'], '10.0', 'qemu-io');
      })(),
    ]);
    writeFileSync(images.path('d.raw'), patternBytes(2 * 1024 * 1024, 3));
  });
  after(() => images.remove());

  it('map with the key: same extents (human and JSON)', async () => {
    for (const opts of [LUKS, AES]) {
      await assertSameOutput(images.dir, ['map', '--object', SECRET, '--image-opts', opts]);
      await assertSameOutput(images.dir, ['map', '--object', SECRET, '--output=json', '--image-opts', opts]);
    }
  });

  it('map without the key, with a wrong one, with an unknown id: same words', async () => {
    await assertSameOutput(images.dir, ['map', 'd.luks']);
    await assertSameOutput(images.dir, ['map', 'aes.qcow2']);
    await assertSameOutput(images.dir, ['map', '--object', 'secret,id=s0,data=nope', '--image-opts', LUKS]);
    await assertSameOutput(images.dir, ['map', '--object', 'secret,id=s9,data=pass', '--image-opts', AES]);
  });

  it('info with a key-secret names the image "json:{…}" as qemu does (human and JSON)', async () => {
    for (const opts of [LUKS, AES]) {
      await assertSameOutput(images.dir, ['info', '--object', SECRET, '--image-opts', opts]);
      await assertSameOutput(images.dir, ['info', '--object', SECRET, '--output=json', '--image-opts', opts]);
    }
  });

  it('compare decrypts both sides: identical, mismatch, and missing-key verdicts', async () => {
    await assertSameOutput(images.dir, ['compare', '--object', SECRET, '--image-opts', LUKS, 'driver=raw,file.filename=d.raw']);
    await assertSameOutput(images.dir, ['compare', '--object', SECRET, '--image-opts', LUKS, AES]);
    await assertSameOutput(images.dir, ['compare', 'd.luks', 'd.raw']);
    await assertSameOutput(images.dir, ['compare', '--object', 'secret,id=s0,data=nope', '--image-opts', 'driver=raw,file.filename=d.raw', LUKS]);
  });

  it('--image-opts without driver=: the key option goes to the probed format (info, map, check, compare, measure)', async () => {
    // qemu hands key-secret / encrypt.key-secret to whatever format it probes; the wrong one for
    // that format is its "does not support the option" (found by the generative hunt).
    const probed = ['key-secret=s0,file.filename=d.luks', 'encrypt.key-secret=s0,file.filename=aes.qcow2'];
    for (const opts of probed) {
      await assertSameOutput(images.dir, ['info', '--object', SECRET, '--image-opts', opts]);
      await assertSameOutput(images.dir, ['info', '--object', SECRET, '--output=json', '--image-opts', opts]);
      await assertSameOutput(images.dir, ['map', '--object', SECRET, '--output=json', '--image-opts', opts]);
      await assertSameOutput(images.dir, ['check', '--object', SECRET, '--image-opts', opts]);
      await assertSameOutput(images.dir, ['compare', '--object', SECRET, '--image-opts', opts, 'driver=raw,file.filename=d.raw']);
      await assertSameOutput(images.dir, ['measure', '--object', SECRET, '-O', 'qcow2', '--image-opts', opts]);
    }
    for (const opts of ['encrypt.key-secret=s0,file.filename=d.luks', 'key-secret=s0,file.filename=aes.qcow2']) {
      await assertSameOutput(images.dir, ['info', '--object', SECRET, '--image-opts', opts]);
      await assertSameOutput(images.dir, ['map', '--object', SECRET, '--image-opts', opts]);
    }
  });

  it('convert sources through --image-opts: options a format lacks fail as in qemu; probed key options decrypt', async () => {
    // instar ignored leftover source options (a laxer exit 0) and refused encrypt.key-secret without driver=.
    for (const opts of ['driver=raw,foo=bar,file.filename=d.raw', 'key-secret=s0,file.filename=aes.qcow2', 'encrypt.key-secret=s0,file.filename=d.luks']) {
      await assertSameOutput(images.dir, ['convert', '--object', SECRET, '--image-opts', opts, '-O', 'raw', 'never.raw']);
      assert.equal(existsSync(images.path('never.raw')), false);
    }
    for (const [opts, driver] of [['key-secret=s0,file.filename=d.luks', 'luks'], ['encrypt.key-secret=s0,file.filename=aes.qcow2', 'qcow2']]) {
      for (const version of VERSIONS) {
        const r = runInstar(['convert', '--object', SECRET, '--image-opts', opts, '-O', 'raw', 'probed.raw', '--qemu-version', version], { cwd: images.dir });
        assert.equal(r.status, 0, r.stderr);
        assert.ok(readFileSync(images.path('probed.raw')).equals(oracleDecrypted(images, version, `driver=${driver},${opts}`)), `${opts} (${version})`);
      }
    }
  });
});
