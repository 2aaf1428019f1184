// Sector decryption as qemu's crypto/block.c does it: the disk is cut into sectors, each
// encrypted on its own with an IV made from its sector number by an "ivgen" (plain = LE32,
// plain64 = LE64, essiv = the LE64 number encrypted with a key hashed from the data key).
// Work is done per run of sectors, not per sector, wherever the mode allows: ECB is one call;
// CBC is one ECB call plus the chaining XOR (each sector restarts the chain from its own IV).
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { ImageError } from '../types.ts';
import { DIGEST_BYTES, digest } from './hash.ts';
import { XTS_BATCHED, xtsDecrypt } from './xts.ts';
import { blockEcb, blockSize, isJsCipher } from './block-ecb.ts';

export interface CipherSpec {
  /** qemu's QCryptoCipherAlgo name: aes-128, aes-192, aes-256, cast5-128, serpent-256, … */
  alg: string;
  mode: string;
  ivgen: string;
  /** The ESSIV hash (essiv only). */
  ivHash?: string;
}

/** The node:crypto cipher name (or the JS cipher's), or a clear refusal for what instar lacks. */
function nodeCipher(alg: string, mode: string): string {
  if (alg === 'cast5-128' && ['cbc', 'ecb', 'ctr'].includes(mode)) {
    // CAST5 lives in OpenSSL's legacy provider: the guest starts node with --openssl-legacy-provider.
    try {
      createCipheriv('cast5-ecb', Buffer.alloc(16), null);
    } catch {
      throw new ImageError('instar cannot decrypt cipher cast5-128 here: node:crypto was started without OpenSSL\'s legacy provider (--openssl-legacy-provider)');
    }
    return `cast5-${mode}`;
  }
  // Serpent and Twofish are JS (block-ecb.ts): ECB, CBC and XTS are built on their ECB.
  if (isJsCipher(alg) && ['ecb', 'cbc', 'xts', 'ctr'].includes(mode) && (mode !== 'xts' || XTS_BATCHED)) return `${alg}-${mode}`;
  const m = /^aes-(128|192|256)$/.exec(alg);
  // OpenSSL has no AES-192-XTS: XTS is built on AES-192-ECB (xts.ts), on little-endian hosts.
  if (!m || (mode === 'xts' && m[1] === '192' && !XTS_BATCHED) || !['ecb', 'cbc', 'xts', 'ctr'].includes(mode)) {
    throw new ImageError(`instar cannot decrypt cipher ${alg} in mode ${mode}: node:crypto does not provide it`);
  }
  return `${alg}-${mode}`;
}

const ecb = blockEcb;

export class SectorCipher {
  private readonly name: string;
  private readonly essivKey?: Buffer;
  private readonly essivAlg?: string;
  /** The cipher's block size: IVs and the CBC chain are this long (16; 8 for CAST5). */
  private readonly block: number;

  /**
   * `ivStep`: how far the IV number advances per sector. 1 counts IVs in sectors; LUKS2 (as dm-crypt
   * without iv_large_sectors) counts them in 512-byte units whatever the sector size.
   */
  constructor(private readonly spec: CipherSpec, private readonly key: Uint8Array, readonly sectorSize = 512, private readonly ivStep = 1) {
    this.name = nodeCipher(spec.alg, spec.mode);
    this.block = blockSize(spec.alg);
    if (spec.ivgen === 'essiv') {
      const hash = spec.ivHash ?? '';
      this.essivKey = digest(hash, key);
      // qemu's ESSIV cipher is the data cipher's family, keyed by the hash of the key.
      this.essivAlg = `${spec.alg.replace(/-\d+$/, '')}-${DIGEST_BYTES[hash] * 8}`;
      nodeCipher(this.essivAlg, 'ecb');
    } else if (spec.ivgen !== 'plain' && spec.ivgen !== 'plain64') {
      throw new ImageError(`IV generator '${spec.ivgen}' not supported`);
    }
    const bytes = Number(/-(\d+)$/.exec(spec.alg)?.[1] ?? 0) / 8;
    const want = spec.mode === 'xts' ? 2 * bytes : bytes;
    if (key.length !== want) throw new ImageError(`key of ${key.length} bytes does not fit ${spec.alg}-${spec.mode}`);
  }

  /** The IVs of `count` sectors from `first` on, one block each. */
  private ivs(first: number, count: number): Buffer {
    const BLOCK = this.block;
    const out = Buffer.alloc(count * BLOCK);
    for (let i = 0; i < count; i++) {
      const sector = first + i * this.ivStep;
      out.writeUInt32LE(sector % 2 ** 32, i * BLOCK);
      if (this.spec.ivgen !== 'plain') out.writeUInt32LE(Math.floor(sector / 2 ** 32), i * BLOCK + 4);
    }
    return this.essivKey ? ecb(this.essivAlg!, this.essivKey, out, true) : out;
  }

  /**
   * CTR on the block-ECB function (ciphers node:crypto has no CTR for): each sector's counter
   * starts at its IV and counts blocks as one big-endian number of the block's width.
   */
  private ctr(buf: Uint8Array, ivs: Buffer, count: number): void {
    const block = this.block;
    const perSector = this.sectorSize / block;
    const counters = Buffer.alloc(buf.length);
    for (let s = 0; s < count; s++) {
      const counter = Buffer.from(ivs.subarray(s * block, (s + 1) * block));
      for (let j = 0; j < perSector; j++) {
        counter.copy(counters, (s * perSector + j) * block);
        for (let b = block - 1; b >= 0 && ++counter[b] === 256; b--) counter[b] = 0;
      }
    }
    const stream = blockEcb(this.spec.alg, this.key, counters, true);
    for (let i = 0; i < buf.length; i++) buf[i] ^= stream[i];
  }

  /** Decrypts whole sectors in place; `first` is the IV number of the first sector in `buf`. */
  decrypt(buf: Uint8Array, first: number): void {
    const size = this.sectorSize;
    if (buf.length % size !== 0) throw new ImageError('encrypted I/O must cover whole sectors');
    const count = buf.length / size;
    if (count === 0) return;
    if (this.spec.mode === 'ecb') {
      buf.set(ecb(this.spec.alg, this.key, buf, false));
      return;
    }
    const ivs = this.ivs(first, count);
    const BLOCK = this.block;
    if (this.spec.mode === 'cbc') {
      const plain = ecb(this.spec.alg, this.key, buf, false);
      // P[i] = D(C[i]) ^ C[i-1]; the first block of each sector uses the sector's IV instead.
      for (let s = 0; s < count; s++) {
        const base = s * size;
        for (let j = 0; j < BLOCK; j++) plain[base + j] ^= ivs[s * BLOCK + j];
        for (let j = base + BLOCK; j < base + size; j++) plain[j] ^= buf[j - BLOCK];
      }
      buf.set(plain);
      return;
    }
    if (this.spec.mode === 'xts' && XTS_BATCHED) {
      xtsDecrypt(this.spec.alg, this.key, buf, ivs, size);
      return;
    }
    if (this.spec.mode === 'ctr' && !this.spec.alg.startsWith('aes-')) {
      this.ctr(buf, ivs, count);
      return;
    }
    // AES-CTR (and XTS on big-endian hosts): one cipher object per sector, each with its own IV.
    for (let s = 0; s < count; s++) {
      const d = createDecipheriv(this.name, this.key, ivs.subarray(s * BLOCK, (s + 1) * BLOCK));
      d.setAutoPadding(false);
      const part = buf.subarray(s * size, (s + 1) * size);
      const out = d.update(part);
      part.set(out);
    }
  }
}
