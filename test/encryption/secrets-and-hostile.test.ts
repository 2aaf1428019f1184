// --object secret errors, worded as both oracles word them, and hostile LUKS headers: key
// derivation parameters no real volume has (refused before any work, in bounded time), key
// material and payload past the end of the file, impossible key sizes, a LUKS2 header.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, openSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { assertSameOutput } from '../differential/harness.ts';
import { runInstar } from '../helpers/oracles.ts';
import { ImageDir, SECRET, makeLuks } from './helpers.ts';

const OPEN = 'driver=luks,key-secret=s0,file.filename=';

describe('secrets and hostile LUKS headers', () => {
  let images: ImageDir;
  /** A copy of the base image with big-endian u32 fields overwritten: [offset, value][]. */
  const variant = (name: string, fields: [number, number][]): void => {
    copyFileSync(images.path('base.luks'), images.path(name));
    const patch = Buffer.alloc(4);
    for (const [offset, value] of fields) {
      patch.writeUInt32BE(value >>> 0);
      writeAt(images.path(name), offset, patch);
    }
  };
  before(async () => {
    images = new ImageDir('luks-hostile');
    await makeLuks(images, { 'base.luks': 'cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256' }, 1024 * 1024);
    writeFileSync(images.path('pw.txt'), 'pass');
  });
  after(() => images.remove());

  it('--object secret errors equal both oracles\' (convert and info)', async () => {
    const objects = [
      ['secret,data=x'], ['foo,id=a'], ['id=s0,data=x'], ['secret,id=s0,data=x,file=pw.txt'], ['secret,id=s0,data=x,bogus=1'],
      ['secret,id=s0,data=x,format=hex'], ['secret,id=s0'], ['secret,id=s0,data=@@,format=base64'], ['secret,id=s0,file=missing.txt'],
      ['secret,id=s0,data=a', 'secret,id=s0,data=b'], ['secret,id=s0,data=pass,keyid=nope'],
    ];
    for (const list of objects) {
      const args = list.flatMap((o) => ['--object', o]);
      await assertSameOutput(images.dir, ['convert', ...args, '--image-opts', `${OPEN}base.luks`, '-O', 'raw', 'never.raw']);
      await assertSameOutput(images.dir, ['info', ...args, 'base.luks']);
    }
    await assertSameOutput(images.dir, ['info', '--object', 'secret,id=0bad,data=x', 'base.luks']);
  });

  it('wrong passphrase, missing key, unknown secret id: the oracles\' words and status', async () => {
    await assertSameOutput(images.dir, ['convert', '--object', 'secret,id=s0,data=wrong', '--image-opts', `${OPEN}base.luks`, '-O', 'raw', 'never.raw']);
    await assertSameOutput(images.dir, ['convert', '--object', 'secret,id=s0,file=pw.txt', '--image-opts', `${OPEN}base.luks`, '-O', 'raw', 'never.raw']);
    await assertSameOutput(images.dir, ['convert', 'base.luks', '-O', 'raw', 'never.raw']);
    await assertSameOutput(images.dir, ['convert', '--object', 'secret,id=s1,data=pass', '--image-opts', `${OPEN}base.luks`, '-O', 'raw', 'never.raw']);
  });

  it('absurd PBKDF2 iteration counts are refused before any work, in bounded time', async () => {
    variant('slot-iters.luks', [[208 + 4, 1_000_000_000]]);
    variant('digest-iters.luks', [[164, 4_000_000_000]]);
    // Eight active slots of 5·10^7 iterations each: every count passes, the sum does not.
    variant('many-slots.luks', Array.from({ length: 8 }, (_, i): [number, number][] => [[208 + i * 48, 0x00ac71f3], [212 + i * 48, 50_000_000]]).flat());
    for (const name of ['slot-iters.luks', 'digest-iters.luks', 'many-slots.luks']) {
      // info derives no key: it must equal the oracles' (which print the counts).
      await assertSameOutput(images.dir, ['info', '--output=json', name]);
      const started = Date.now();
      const r = runInstar(['convert', '--object', SECRET, '--image-opts', `${OPEN}${name}`, '-O', 'raw', 'never.raw'], { cwd: images.dir, timeoutMs: 20_000 });
      assert.ok(Date.now() - started < 10_000, 'refused quickly');
      assert.equal(r.status, 1);
      assert.match(r.stderr, /^qemu-img: Could not open '.*': (LUKS (key slot 0|master key digest) asks for \d+ PBKDF2 iterations, more than instar accepts \(100000000\)|LUKS key slots ask for \d+ PBKDF2 iterations in all, more than instar accepts \(200000000\))\n$/);
    }
  });

  it('key material or payload past the end of the file, key sizes 0 and 2^32-1, a LUKS2 header: as the oracles', async () => {
    copyFileSync(images.path('base.luks'), images.path('short.luks'));
    truncateSync(images.path('short.luks'), 8192);
    variant('payload.luks', [[104, 0x10000000]]);
    variant('key0.luks', [[108, 0]]);
    variant('keyhuge.luks', [[108, 0xffffffff]]);
    copyFileSync(images.path('base.luks'), images.path('v2.luks'));
    writeAt(images.path('v2.luks'), 6, Buffer.from([0, 2]));
    for (const name of ['short.luks', 'payload.luks', 'key0.luks', 'keyhuge.luks']) {
      await assertSameOutput(images.dir, ['info', name]);
      await assertSameOutput(images.dir, ['convert', '--object', SECRET, '--image-opts', `${OPEN}${name}`, '-O', 'raw', 'never.raw']);
    }
    // qemu refuses LUKS2 by its version; instar reads LUKS2 unless --unsafe-quirks (docs/luks2.md),
    // and a LUKS1 header merely patched to version 2 is no valid LUKS2 header.
    await assertSameOutput(images.dir, ['info', '-f', 'luks', 'v2.luks'], { instarArgs: ['--unsafe-quirks'] });
    const r = runInstar(['info', '-f', 'luks', 'v2.luks'], { cwd: images.dir });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^qemu-img: Could not open 'v2.luks': LUKS2 header is invalid: primary header: invalid header size \d+; secondary header: not found\n$/);
  });
});

function writeAt(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}
