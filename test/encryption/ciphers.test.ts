// The batched sector ciphers against node:crypto's own modes applied one sector at a time (the
// definition): XTS (tweak arithmetic in JS around ECB) and CBC (ECB plus the chaining XOR), for
// random keys, sector numbers (past 2^32 too), sizes 512 and 4096, and every ivgen.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes, createHash } from 'node:crypto';
import { SectorCipher } from '../../src/formats/crypto/sector-cipher.ts';
import { afMerge } from '../../src/formats/crypto/af-splitter.ts';
import { pbkdf2 } from '../../src/formats/crypto/kdf.ts';
import { ImageError } from '../../src/formats/types.ts';

/** The IV qemu's ivgen gives a sector, computed independently of the code under test. */
function iv(ivgen: string, sector: bigint, key: Buffer, alg: string, ivHash = 'sha256'): Buffer {
  const b = Buffer.alloc(16);
  if (ivgen === 'plain') b.writeUInt32LE(Number(sector & 0xffffffffn));
  else b.writeBigUInt64LE(sector);
  if (ivgen !== 'essiv') return b;
  const salt = createHash(ivHash).update(key).digest();
  const c = createCipheriv(`aes-${salt.length * 8}-ecb`, salt, null);
  c.setAutoPadding(false);
  return c.update(b);
}

function encryptSectors(alg: string, mode: string, ivgen: string, key: Buffer, plain: Buffer, first: bigint, size: number): Buffer {
  const out = Buffer.alloc(plain.length);
  for (let s = 0; s * size < plain.length; s++) {
    const c = createCipheriv(`${alg}-${mode}`, key, iv(ivgen, first + BigInt(s), key, alg));
    c.setAutoPadding(false);
    c.update(plain.subarray(s * size, (s + 1) * size)).copy(out, s * size);
  }
  return out;
}

describe('sector ciphers', () => {
  const cases: [string, string, string, number][] = [
    ['aes-256', 'xts', 'plain64', 64], ['aes-128', 'xts', 'plain', 32], ['aes-128', 'xts', 'essiv', 32],
    ['aes-256', 'cbc', 'essiv', 32], ['aes-128', 'cbc', 'plain64', 16], ['aes-192', 'cbc', 'plain', 24], ['aes-256', 'ctr', 'plain64', 32],
  ];
  for (const [alg, mode, ivgen, keyLen] of cases) {
    for (const size of [512, 4096]) {
      it(`${alg}-${mode} ${ivgen}, ${size}-byte sectors, equals node:crypto sector by sector`, () => {
        for (let round = 0; round < 8; round++) {
          const key = randomBytes(keyLen);
          const plain = randomBytes(size * (1 + (round % 5)));
          const first = round % 2 === 0 ? BigInt(round * 1000) : 2n ** 32n - 2n + BigInt(round);
          const cipherText = encryptSectors(alg, mode, ivgen, key, plain, first, size);
          const c = new SectorCipher({ alg, mode, ivgen, ivHash: 'sha256' }, key, size);
          // Odd byte offsets: the batched code must not depend on its buffer's alignment.
          const holder = Buffer.alloc(cipherText.length + 1);
          const view = holder.subarray(round % 2, round % 2 + cipherText.length);
          cipherText.copy(view);
          c.decrypt(view, Number(first));
          assert.ok(view.equals(plain), `round ${round}`);
        }
      });
    }
  }

  it('refuses what node:crypto lacks, by name', () => {
    for (const [alg, mode] of [['serpent-256', 'ofb'], ['twofish-128', 'cfb'], ['cast5-128', 'xts'], ['des-56', 'cbc']]) {
      assert.throws(() => new SectorCipher({ alg, mode, ivgen: 'plain64' }, Buffer.alloc(64)), (e) => e instanceof ImageError && /instar cannot decrypt cipher/.test(e.message));
    }
  });

  it('the AF merge undoes a split built from its definition', () => {
    const key = randomBytes(32);
    const stripes = 4000;
    const material = randomBytes(32 * stripes);
    // Build the last stripe so that the merge must give `key`: d = diffuse(...) of the others.
    const d = Buffer.alloc(32);
    for (let s = 0; s < stripes - 1; s++) {
      for (let i = 0; i < 32; i++) d[i] ^= material[s * 32 + i];
      const h = createHash('sha256').update(Buffer.from([0, 0, 0, 0])).update(d).digest();
      h.copy(d, 0, 0, 32);
    }
    for (let i = 0; i < 32; i++) material[(stripes - 1) * 32 + i] = d[i] ^ key[i];
    assert.ok(afMerge(material, 32, stripes, 'sha256').equals(key));
  });

  it('PBKDF2 refuses absurd iteration counts at once', () => {
    const started = Date.now();
    assert.throws(() => pbkdf2(Buffer.from('x'), Buffer.alloc(32), 1e9, 32, 'sha256', 'slot'), /PBKDF2 iteration count 1000000000/);
    assert.throws(() => pbkdf2(Buffer.from('x'), Buffer.alloc(32), 0, 32, 'sha256', 'slot'), /PBKDF2 iteration count 0/);
    assert.ok(Date.now() - started < 1000);
  });
});
