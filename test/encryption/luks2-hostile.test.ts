// Hostile LUKS2 headers, built from a cryptsetup volume by rewriting its JSON (both copies, fresh
// checksums) or damaging it: each ends in one clear line, status 1, in bounded time, through the
// sandboxed CLI. A damaged primary copy alone is survived through the secondary, as cryptsetup does.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, openSync, readFileSync } from 'node:fs';
import { FdDevice } from '../../src/io/fd-device.ts';
import { luksDriver } from '../../src/formats/luks/driver.ts';
import { ImageError, type Image } from '../../src/formats/types.ts';
import { withArgon2 } from '../../src/formats/crypto/argon2.ts';
import { runInstar } from '../helpers/oracles.ts';
import { ImageDir } from './helpers.ts';
import { PASSPHRASE, encryptWithCryptsetup, readJson, rewriteJson, writeAt } from './luks2-helpers.ts';

const SECRET = `secret,id=s0,data=${PASSPHRASE}`;
const open = (name: string) => `driver=luks,key-secret=s0,file.filename=${name}`;
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('luks2: hostile headers', () => {
  let images: ImageDir;
  let plain: Buffer;
  let json: Json;
  const base = () => images.path('base.luks2');
  const edited = (name: string, edit: (j: Json) => void): void => {
    const j = structuredClone(json);
    edit(j);
    rewriteJson(base(), images.path(name), JSON.stringify(j));
  };
  const convert = (name: string, sandbox: string[] = []) => {
    const started = Date.now();
    const r = runInstar(['convert', ...sandbox, '--object', SECRET, '--image-opts', open(name), '-O', 'raw', `${name}.raw`], { cwd: images.dir, timeoutMs: 60_000 });
    return { ...r, ms: Date.now() - started };
  };
  const refused = (name: string, message: RegExp) => {
    const r = convert(name);
    assert.equal(r.status, 1, `${name}: ${r.stderr}`);
    assert.match(r.stderr, /^qemu-img: Could not open '[^\n]*': [^\n]+\n$/, `${name}: one line`);
    assert.match(r.stderr, message, name);
    assert.ok(r.ms < 15_000, `${name}: refused in ${r.ms} ms`);
  };

  before(async () => {
    images = new ImageDir('luks2-hostile');
    [plain] = await Promise.all([
      encryptWithCryptsetup(images, 'base.luks2', ['--pbkdf', 'argon2id', '--pbkdf-memory', '32768', '--pbkdf-force-iterations', '4'], 5),
      // PBKDF2 with few iterations: the mutation run below opens it hundreds of times.
      encryptWithCryptsetup(images, 'fuzz-base.luks2', ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'], 6),
    ]);
    json = readJson(base());
  });
  after(() => images.remove());

  it('the unchanged volume and a same-JSON rewrite read back (the rewriting itself is sound)', () => {
    rewriteJson(base(), images.path('same.luks2'), JSON.stringify(json));
    for (const name of ['base.luks2', 'same.luks2']) {
      const r = convert(name);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(readFileSync(images.path(`${name}.raw`)).subarray(0, plain.length).equals(plain));
    }
  });

  it('JSON area: not NUL-terminated, malformed, not an object, wrong json_size', () => {
    rewriteJson(base(), images.path('nonul.luks2'), JSON.stringify(json), { noNul: true });
    refused('nonul.luks2', /primary header: the JSON area is not NUL terminated; secondary header: the JSON area is not NUL terminated/);
    rewriteJson(base(), images.path('malformed.luks2'), '{"keyslots": {"0": [');
    refused('malformed.luks2', /LUKS2 metadata: the JSON area is not valid JSON/);
    rewriteJson(base(), images.path('array.luks2'), '[1,2,3]');
    refused('array.luks2', /LUKS2 metadata: the JSON area is not an object/);
    edited('jsonsize.luks2', (j) => (j.config.json_size = '4194304'));
    refused('jsonsize.luks2', /config.json_size 4194304 does not match/);
  });

  it('oversized header (hdr_size 8 MiB, and 2^64-1) is refused without reading it', () => {
    for (const [name, size] of [['huge.luks2', 8n * 1024n * 1024n], ['max.luks2', 2n ** 64n - 1n]] as const) {
      copyFileSync(base(), images.path(name));
      const field = Buffer.alloc(8);
      field.writeBigUInt64BE(size);
      writeAt(images.path(name), 8, field);
      writeAt(images.path(name), 16384 + 8, field);
      refused(name, new RegExp(`invalid header size ${size}`));
    }
  });

  it('checksum mismatch in both copies is refused; in the primary alone the secondary is used', () => {
    rewriteJson(base(), images.path('csum.luks2'), JSON.stringify(json), { badChecksum: true });
    refused('csum.luks2', /primary header: checksum mismatch; secondary header: checksum mismatch/);
    rewriteJson(base(), images.path('csum1.luks2'), JSON.stringify(json), { badChecksum: true, copies: ['primary'] });
    const r = convert('csum1.luks2');
    assert.equal(r.status, 0, r.stderr);
    assert.ok(readFileSync(images.path('csum1.luks2.raw')).subarray(0, plain.length).equals(plain));
  });

  it('absurd KDF costs: Argon2 memory 4 GiB, Argon2 time 10^9, PBKDF2 10^9 iterations (slot and digest)', () => {
    edited('mem.luks2', (j) => (j.keyslots['0'].kdf.memory = 4194304));
    refused('mem.luks2', /Argon2 memory cost 4194304 KiB exceeds the guest's memory budget \(at most \d+ KiB\)/);
    edited('time.luks2', (j) => (j.keyslots['0'].kdf.time = 1_000_000_000));
    refused('time.luks2', /Argon2 time cost 1000000000 with 32768 KiB is more work than instar accepts/);
    edited('pbkdf2.luks2', (j) => (j.keyslots['0'].kdf = { type: 'pbkdf2', hash: 'sha256', iterations: 1_000_000_000, salt: j.keyslots['0'].kdf.salt }));
    refused('pbkdf2.luks2', /asks for 1000000000 PBKDF2 iterations, more than instar accepts/);
    edited('digest.luks2', (j) => (j.digests['0'].iterations = 1_000_000_000));
    refused('digest.luks2', /LUKS2 digest asks for 1000000000 PBKDF2 iterations/);
  });

  it('segment offset past the end of the file; key material area outside the keyslots area; odd values', () => {
    edited('offset.luks2', (j) => (j.segments['0'].offset = '1099511627776'));
    refused('offset.luks2', /LUKS2 segment starts at 1099511627776, past the end of the file/);
    edited('size.luks2', (j) => (j.segments['0'].size = '1099511627776'));
    refused('size.luks2', /LUKS2 segment ends at \d+, past the end of the file/);
    edited('area.luks2', (j) => (j.keyslots['0'].area.offset = '99999999999'));
    refused('area.luks2', /keyslot 0\.area: area lies outside the keyslots area|keyslot 0: area lies outside the keyslots area/);
    edited('bigint.luks2', (j) => (j.segments['0'].offset = '99999999999999999999'));
    refused('bigint.luks2', /segment 0\.offset 99999999999999999999 is too large/);
    edited('stripes.luks2', (j) => (j.keyslots['0'].af.stripes = 4_000_000));
    refused('stripes.luks2', /keyslot 0\.af\.stripes is not an integer from 1 to 4000/);
    edited('cipher.luks2', (j) => (j.segments['0'].encryption = 'aes-xts-plain64:sha1'));
    refused('cipher.luks2', /IV generator 'plain64:sha1' not supported/);
    edited('segments.luks2', (j) => (j.segments['1'] = j.segments['0']));
    refused('segments.luks2', /2 data segments/);
    edited('sector.luks2', (j) => (j.segments['0'].sector_size = 3000));
    refused('sector.luks2', /sector size 3000 is invalid/);
  });

  it('random mutations of the metadata: only ImageError escapes, messages stay one line', async () => {
    const pbkdf2Base = images.path('fuzz-base.luks2');
    const start = readJson(pbkdf2Base);
    const values: unknown[] = [0, -1, 1, 2 ** 31, 2 ** 53, 1e300, 'x', '', '-1', '18446744073709551615', '1e3', null, true, [], {}, ['0'], 'aes-xts-plain64',
      'dynamic', 'sha256', 'argon2id', 4000, 512, 4096, 'AAAA', 'a\nb\u001b[31m', 'serpent-cbc-essiv:sha256', 'cast5-ecb', 'twofish-xts-plain'];
    const paths: string[][] = [];
    const walk = (o: unknown, at: string[]) => {
      if (o && typeof o === 'object') for (const k of Object.keys(o)) { paths.push([...at, k]); walk((o as Json)[k], [...at, k]); }
    };
    walk(start, []);
    let seed = 2024;
    const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
    const path = images.path('fuzz.luks2');
    let opened = 0;
    for (let i = 0; i < 400; i++) {
      const j = structuredClone(start) as Json;
      for (let m = 0; m <= rnd(3); m++) {
        const p = paths[rnd(paths.length)];
        let o: Json | undefined = j;
        for (const k of p.slice(0, -1)) o = o && typeof o === 'object' ? o[k] : undefined;
        if (!o || typeof o !== 'object') continue;
        if (rnd(5) === 0) delete o[p[p.length - 1]];
        else o[p[p.length - 1]] = structuredClone(values[rnd(values.length)]);
      }
      rewriteJson(pbkdf2Base, path, JSON.stringify(j));
      const fd = openSync(path, 'r');
      try {
        const image = (await withArgon2(() => luksDriver.open(new FdDevice(fd, false), { writable: false, key: Buffer.from(PASSPHRASE), keyRequired: true }))()) as Image;
        image.info();
        image.read(Buffer.alloc(8192), 4096);
        opened++;
      } catch (e) {
        assert.ok(e instanceof ImageError, `mutation ${i}: ${String(e)}\n${JSON.stringify(j)}`);
        assert.ok(/^[\x20-\x7e]+$/.test(e.message), `mutation ${i}: ${JSON.stringify(e.message)}`);
      } finally {
        closeSync(fd);
      }
    }
    // Mutations of fields that do not matter (priority, tokens, …) still open: the walk reached reads.
    assert.ok(opened > 0, `${opened} mutations opened`);
  });

  it('info on a hostile header is one clear line too (no key needed)', () => {
    rewriteJson(base(), images.path('junk.luks2'), '{"keyslots": {"0": [');
    const r = runInstar(['info', 'junk.luks2'], { cwd: images.dir });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^qemu-img: Could not open 'junk.luks2': LUKS2 metadata: the JSON area is not valid JSON\n$/);
  });
});
