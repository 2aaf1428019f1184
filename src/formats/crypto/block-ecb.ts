// ECB over whole blocks for every block cipher qemu's LUKS takes: AES and CAST5 from node:crypto
// (CAST5 through OpenSSL's legacy provider), Serpent and Twofish from their specifications
// (serpent.ts, twofish.ts). The sector modes (CBC, XTS, ESSIV) are built on this one function.
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { Serpent } from './serpent.ts';
import { Twofish } from './twofish.ts';

/** Key schedules of the JS ciphers, by algorithm and key (an image uses two or three keys). */
const schedules = new Map<string, Serpent | Twofish>();
const MAX_SCHEDULES = 16;

function jsCipher(alg: string, key: Uint8Array): Serpent | Twofish | undefined {
  const family = alg.startsWith('serpent-') ? Serpent : alg.startsWith('twofish-') ? Twofish : undefined;
  if (!family) return undefined;
  const id = `${alg}:${Buffer.from(key).toString('hex')}`;
  let c = schedules.get(id);
  if (!c) {
    if (schedules.size >= MAX_SCHEDULES) schedules.clear();
    c = new family(key);
    schedules.set(id, c);
  }
  return c;
}

/** Whether `alg` is one of the block ciphers written in JS here. */
export function isJsCipher(alg: string): boolean {
  return /^(serpent|twofish)-(128|192|256)$/.test(alg);
}

/** The OpenSSL name family of a qemu algorithm ("aes-256" stays, "cast5-128" → "cast5"). */
function opensslName(alg: string): string {
  return alg === 'cast5-128' ? 'cast5' : alg;
}

/** Block size in bytes of a qemu algorithm. */
export function blockSize(alg: string): number {
  return alg === 'cast5-128' ? 8 : 16;
}

/** `input` (whole blocks) encrypted or decrypted with `alg` in ECB mode, as a new buffer. */
export function blockEcb(alg: string, key: Uint8Array, input: Uint8Array, encrypt: boolean): Buffer {
  const js = jsCipher(alg, key);
  if (js) {
    const out = Buffer.alloc(input.length);
    js.ecb(input, out, encrypt);
    return out;
  }
  const name = `${opensslName(alg)}-ecb`;
  const c = encrypt ? createCipheriv(name, key, null) : createDecipheriv(name, key, null);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(input), c.final()]);
}
