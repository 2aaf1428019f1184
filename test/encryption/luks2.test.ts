// LUKS2, which neither oracle reads (instar exceeds qemu-img here on purpose, docs/luks2.md):
// volumes made at test time by cryptsetup. Proof of decryption is independent of instar's code:
// the volume key instar derives equals cryptsetup's --dump-volume-key, and the disk instar's
// `convert -O raw` writes equals plaintext that cryptsetup itself (offline reencryption) or
// node:crypto (with cryptsetup's dumped key) encrypted. With --unsafe-quirks instar says what the
// oracles say; the wrong-passphrase message is qemu's LUKS1 one.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { assertSameOutput } from '../differential/harness.ts';
import { runInstar, runQemu } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { readLuks2Header } from '../../src/formats/luks/luks2-header.ts';
import { parseLuks2Metadata } from '../../src/formats/luks/luks2-metadata.ts';
import { unlockLuks2 } from '../../src/formats/luks/luks2-unlock.ts';
import { withArgon2 } from '../../src/formats/crypto/argon2.ts';
import { ImageDir, makeLuks } from './helpers.ts';
import { PASSPHRASE, cryptsetup, dumpVolumeKey, encryptPayload, encryptWithCryptsetup, plaintext } from './luks2-helpers.ts';

const SECRET = `secret,id=s0,data=${PASSPHRASE}`;
const open = (name: string) => `driver=luks,key-secret=s0,file.filename=${name}`;
const SMALL_ARGON = ['--pbkdf-memory', '32768', '--pbkdf-force-iterations', '4'];

/** Encrypted by cryptsetup's offline reencryption: name → cryptsetup options. */
const REENCRYPTED: Record<string, string[]> = {
  'argon2id-512.luks2': ['--pbkdf', 'argon2id', ...SMALL_ARGON, '--sector-size', '512'],
  'argon2i-4096.luks2': ['--pbkdf', 'argon2i', ...SMALL_ARGON, '--sector-size', '4096'],
  'pbkdf2-4096.luks2': ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--hash', 'sha512', '--sector-size', '4096'],
  'pbkdf2-512-cbc-essiv.luks2': ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--cipher', 'aes-cbc-essiv:sha256', '--key-size', '256', '--sector-size', '512'],
};

async function instarVolumeKey(path: string): Promise<Buffer> {
  const fd = openSync(path, 'r');
  try {
    const dev = new FdDevice(fd, false);
    const meta = parseLuks2Metadata(readLuks2Header(dev));
    return (await withArgon2(() => unlockLuks2(dev, meta, Buffer.from(PASSPHRASE)))()) as Buffer;
  } finally {
    closeSync(fd);
  }
}

describe('luks2: volumes made by cryptsetup', () => {
  let images: ImageDir;
  const plain = new Map<string, Buffer>();
  before(async () => {
    images = new ImageDir('luks2');
    let seed = 1;
    await Promise.all([
      ...Object.entries(REENCRYPTED).map(async ([name, options]) => plain.set(name, await encryptWithCryptsetup(images, name, options, seed++))),
      makeLuks(images, { 'v1.luks': 'cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256' }, 1024 * 1024),
    ]);
    // luksFormat volumes, argon2id and pbkdf2, 4096 and 512: payload encrypted with node:crypto and the dumped key.
    const formatted: [string, string[], number][] = [
      ['format-argon2id-4096.luks2', ['--pbkdf', 'argon2id', ...SMALL_ARGON, '--sector-size', '4096'], 4096],
      ['format-pbkdf2-512.luks2', ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--sector-size', '512'], 512],
    ];
    await Promise.all(formatted.map(async ([name, options, sectorSize]) => {
      const size = 24 * 1024 * 1024;
      writeFileSync(images.path(name), '');
      truncateSync(images.path(name), size);
      await cryptsetup(images, ['luksFormat', '-q', '--type', 'luks2', '--key-file', 'key', ...options, name]);
      const offset = Number((await cryptsetup(images, ['luksDump', name])).match(/offset: (\d+) \[bytes\]/)![1]);
      const data = plaintext(size - offset, 99 + sectorSize);
      encryptPayload(images.path(name), await dumpVolumeKey(images, name), offset, sectorSize, data);
      plain.set(name, data);
    }));
  });
  after(() => images.remove());

  const ALL = () => [...plain.keys()];

  it('the volume key instar derives equals cryptsetup --dump-volume-key (argon2id, argon2i, pbkdf2; 512 and 4096)', async () => {
    for (const name of ALL()) {
      const want = await dumpVolumeKey(images, name);
      assert.ok(want.length >= 32, name);
      assert.ok((await instarVolumeKey(images.path(name))).equals(want), name);
    }
  });

  it('convert -O raw (sandboxed, and in-process) gives the plaintext back', () => {
    for (const [i, name] of ALL().entries()) {
      const out = `${name}.raw`;
      const r = runInstar(['convert', ...(i % 2 ? ['--sandbox=none'] : []), '--object', SECRET, '--image-opts', open(name), '-O', 'raw', out], { cwd: images.dir });
      assert.equal(r.status, 0, `${name}: ${r.stderr}`);
      const got = readFileSync(images.path(out));
      const want = plain.get(name)!;
      // Reencrypted volumes are defined over the plaintext cryptsetup encrypted (4 MiB); past it the
      // dynamic segment runs over bytes cryptsetup used for its own bookkeeping.
      assert.ok(got.length >= want.length, `${name}: ${got.length} bytes`);
      assert.ok(got.subarray(0, want.length).equals(want), `${name}: decrypted bytes differ`);
    }
  });

  it('compare with the plaintext says identical; map says what qemu says of LUKS1 (encrypted data)', () => {
    writeFileSync(images.path('plain-4096.raw'), plain.get('format-argon2id-4096.luks2')!);
    const same = runInstar(['compare', '--object', SECRET, '--image-opts', open('format-argon2id-4096.luks2'), 'driver=raw,file.filename=plain-4096.raw'], { cwd: images.dir });
    assert.equal(same.status, 0, same.stderr);
    assert.equal(same.stdout, 'Images are identical.\n');
    const v1 = runQemu('10.0', ['map', '--object', SECRET, '--image-opts', open('v1.luks')], { cwd: images.dir });
    const v2 = runInstar(['map', '--object', SECRET, '--image-opts', open('pbkdf2-4096.luks2')], { cwd: images.dir });
    assert.deepEqual([v2.status, v2.stdout, v2.stderr], [v1.status, v1.stdout, v1.stderr]);
  });

  it('info (detected) reports luks with the fields of qemu\'s LUKS1 info', () => {
    const v1 = JSON.parse(runQemu('10.0', ['info', '--output=json', images.path('v1.luks')]).stdout);
    const r = runInstar(['info', '--output=json', '--qemu-version', '10.0', 'pbkdf2-4096.luks2'], { cwd: images.dir });
    assert.equal(r.status, 0, r.stderr);
    const v2 = JSON.parse(r.stdout);
    assert.equal(v2.format, 'luks');
    assert.equal(v2.encrypted, true);
    assert.deepEqual(Object.keys(v2).sort(), Object.keys(v1).sort());
    assert.deepEqual(Object.keys(v2['format-specific'].data).sort(), Object.keys(v1['format-specific'].data).sort());
    const d = v2['format-specific'].data;
    assert.equal(d['cipher-alg'], 'aes-256');
    assert.equal(d['cipher-mode'], 'xts');
    assert.equal(d['ivgen-alg'], 'plain64');
    assert.equal(d['hash-alg'], 'sha512');
    assert.equal(d['payload-offset'], 8 * 1024 * 1024);
    assert.deepEqual(Object.keys(d.slots[0]).sort(), Object.keys(v1['format-specific'].data.slots[0]).sort());
    const human = runInstar(['info', 'pbkdf2-512-cbc-essiv.luks2'], { cwd: images.dir });
    assert.match(human.stdout, /file format: luks\n/);
    assert.match(human.stdout, /ivgen hash alg: sha256\n/);
    assert.match(human.stdout, /cipher mode: cbc\n/);
  });

  it('--unsafe-quirks: the oracles\' behaviour (probed as raw; -f luks: "LUKS version 2 is not supported")', async () => {
    await assertSameOutput(images.dir, ['info', 'argon2id-512.luks2'], { instarArgs: ['--unsafe-quirks'] });
    await assertSameOutput(images.dir, ['info', '-f', 'luks', 'argon2id-512.luks2'], { instarArgs: ['--unsafe-quirks'] });
    await assertSameOutput(images.dir, ['convert', '--object', SECRET, '--image-opts', open('argon2id-512.luks2'), '-O', 'raw', 'never.raw'], { instarArgs: ['--unsafe-quirks'] });
  });

  it('a wrong passphrase gives qemu\'s LUKS1 wrong-passphrase message and status', () => {
    const bad = ['--object', 'secret,id=s0,data=wrong', '--image-opts'];
    const want = runQemu('10.0', ['convert', ...bad, open('v1.luks'), '-O', 'raw', 'never.raw'], { cwd: images.dir });
    assert.equal(want.status, 1);
    for (const name of ['argon2i-4096.luks2', 'pbkdf2-4096.luks2']) {
      const got = runInstar(['convert', ...bad, open(name), '-O', 'raw', 'never.raw'], { cwd: images.dir });
      assert.equal(got.status, 1);
      assert.equal(got.stderr, want.stderr.replace(open('v1.luks'), open(name)));
    }
  });
});
