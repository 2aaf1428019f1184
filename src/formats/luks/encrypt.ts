// Sector encryption for what instar writes into LUKS volumes (key-slot material at create, the
// payload in the writer): the inverse of crypto/sector-cipher.ts's decryption, built on the same
// block-ECB function so that every cipher instar reads it can also write. Each 512-byte sector is
// encrypted alone with the IV of its number (plain: LE32, plain64: LE64, essiv: the LE64 number
// encrypted with the hash of the key). CBC chains inside a sector; XTS whitens each block with a
// tweak that starts at E_k2(IV) and is multiplied by x in GF(2^128) block by block.
import { createCipheriv } from 'node:crypto';
import { blockEcb, blockSize } from '../crypto/block-ecb.ts';
import { DIGEST_BYTES, digest } from '../crypto/hash.ts';
import { SectorCipher, type CipherSpec } from '../crypto/sector-cipher.ts';
import { ImageError } from '../types.ts';

export const SECTOR = 512;

export class SectorEncryptor {
  private readonly block: number;
  private readonly essiv?: { alg: string; key: Buffer };
  /** CTR is its own inverse: the reader's keystream encrypts too. */
  private readonly ctr?: SectorCipher;

  constructor(private readonly spec: CipherSpec, private readonly key: Uint8Array) {
    this.block = blockSize(spec.alg);
    // The reader's constructor refuses what instar cannot do (and wrong key lengths) in its words.
    const reader = new SectorCipher(spec, key, SECTOR);
    if (spec.mode === 'ctr') this.ctr = reader;
    if (spec.ivgen === 'essiv') {
      const hash = spec.ivHash ?? '';
      this.essiv = { alg: `${spec.alg.replace(/-\d+$/, '')}-${DIGEST_BYTES[hash] * 8}`, key: digest(hash, key) };
    }
    if (spec.mode === 'xts' && this.block !== 16) throw new ImageError(`instar cannot encrypt ${spec.alg} in mode xts`);
  }

  /** The IV of sector `sector`, one cipher block. */
  private iv(sector: number): Buffer {
    const out = Buffer.alloc(this.block);
    out.writeUInt32LE(sector % 2 ** 32, 0);
    if (this.spec.ivgen !== 'plain' && this.block >= 8) out.writeUInt32LE(Math.floor(sector / 2 ** 32), 4);
    return this.essiv ? blockEcb(this.essiv.alg, this.essiv.key, out, true) : out;
  }

  /** Encrypts whole sectors in place; `first` is the number of the first sector in `buf`. */
  encrypt(buf: Uint8Array, first: number): void {
    if (buf.length % SECTOR !== 0) throw new ImageError('encrypted I/O must cover whole sectors');
    const { alg, mode } = this.spec;
    if (mode === 'ecb') {
      buf.set(blockEcb(alg, this.key, buf, true));
      return;
    }
    if (this.ctr) {
      this.ctr.decrypt(buf, first);
      return;
    }
    // node:crypto has AES-CBC and AES-128/256-XTS: one cipher object per sector.
    const native = /^aes-(128|256)$/.test(alg) || (alg === 'aes-192' && mode === 'cbc') ? `${alg}-${mode}` : undefined;
    for (let s = 0; s < buf.length / SECTOR; s++) {
      const sector = buf.subarray(s * SECTOR, (s + 1) * SECTOR);
      if (native) {
        const c = createCipheriv(native, this.key, this.iv(first + s));
        c.setAutoPadding(false);
        sector.set(c.update(sector));
      } else if (mode === 'cbc') this.cbc(sector, this.iv(first + s));
      else this.xts(sector, this.iv(first + s));
    }
  }

  private cbc(sector: Uint8Array, iv: Buffer): void {
    const b = this.block;
    let chain: Uint8Array = iv;
    for (let at = 0; at < sector.length; at += b) {
      const block = sector.subarray(at, at + b);
      for (let i = 0; i < b; i++) block[i] ^= chain[i];
      block.set(blockEcb(this.spec.alg, this.key, block, true));
      chain = block;
    }
  }

  private xts(sector: Uint8Array, iv: Buffer): void {
    const half = this.key.length / 2;
    const tweak = blockEcb(this.spec.alg, this.key.subarray(half), iv, true);
    const tweaks = Buffer.alloc(sector.length);
    for (let at = 0; at < sector.length; at += 16) {
      tweak.copy(tweaks, at);
      // Multiply by x: a 128-bit little-endian left shift, reduced by x^128 = x^7 + x^2 + x + 1.
      let carry = 0;
      for (let i = 0; i < 16; i++) {
        const next = tweak[i] >> 7;
        tweak[i] = ((tweak[i] << 1) & 0xff) | carry;
        carry = next;
      }
      if (carry) tweak[0] ^= 0x87;
    }
    for (let i = 0; i < sector.length; i++) sector[i] ^= tweaks[i];
    const out = blockEcb(this.spec.alg, this.key.subarray(0, half), sector, true);
    for (let i = 0; i < sector.length; i++) sector[i] = out[i] ^ tweaks[i];
  }
}
