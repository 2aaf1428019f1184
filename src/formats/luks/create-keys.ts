// The key material of a new LUKS1 volume, as qemu's qcrypto_block_luks_create makes it: a random
// master key; its PBKDF2 digest with an iteration count benchmarked from iter-time (divided by 8,
// as cryptsetup does, at least 1000); key slot 0 with its own benchmarked count (at least 1000),
// the passphrase's PBKDF2 key encrypting the anti-forensic split of the master key (4000 stripes)
// as sectors from IV 0. The counts come from timing this machine, so they are not qemu's numbers
// (nor the same from run to run): qemu's are not reproducible either.
import { randomBytes } from 'node:crypto';
import { ImageError } from '../types.ts';
import { DIGEST_BYTES, digest } from '../crypto/hash.ts';
import { MAX_PBKDF2_ITERATIONS, pbkdf2 } from '../crypto/kdf.ts';
import type { CipherSpec } from '../crypto/sector-cipher.ts';
import { SectorEncryptor } from './encrypt.ts';

export const STRIPES = 4000;
const DIGEST_LEN = 20;
const SALT_LEN = 32;
const MIN_ITERATIONS = 1000;
/** How long the benchmark runs PBKDF2 at least (qemu times 500 ms of CPU; less is precise enough). */
const BENCH_MS = 25;

/** PBKDF2 iterations per second of `hash` for this password, salt and output length. */
function iterationsPerSecond(hash: string, password: Uint8Array, salt: Uint8Array, keyLen: number): number {
  for (let iterations = 1 << 12; ; iterations *= 2) {
    const start = process.hrtime.bigint();
    pbkdf2(password, salt, iterations, keyLen, hash, 'LUKS benchmark');
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    if (ms >= BENCH_MS || iterations >= MAX_PBKDF2_ITERATIONS / 2) return (iterations * 1000) / Math.max(ms, 0.001);
  }
}

function scaled(perSecond: number, iterTime: number, divisor: number): number {
  const n = Math.max(MIN_ITERATIONS, Math.floor(Math.floor((perSecond * iterTime) / 1000) / divisor));
  if (n > MAX_PBKDF2_ITERATIONS) {
    throw new ImageError(`iter-time=${iterTime} asks for ${n} PBKDF2 iterations, more than instar runs (${MAX_PBKDF2_ITERATIONS})`);
  }
  return n;
}

/** Replaces `block` by its diffusion: each digest-sized piece i becomes H(BE32(i) || piece). */
function diffuse(block: Buffer, hash: string): void {
  const d = DIGEST_BYTES[hash];
  const counter = Buffer.alloc(4);
  for (let i = 0, at = 0; at < block.length; i++, at += d) {
    const len = Math.min(d, block.length - at);
    counter.writeUInt32BE(i >>> 0);
    digest(hash, counter, block.subarray(at, at + len)).copy(block, at, 0, len);
  }
}

/** The anti-forensic split of `key`: stripes-1 random blocks, then the key XOR their diffused fold. */
export function afSplit(key: Uint8Array, stripes: number, hash: string): Buffer {
  const out = randomBytes(key.length * stripes);
  const acc = Buffer.alloc(key.length);
  for (let s = 0; s < stripes - 1; s++) {
    const stripe = out.subarray(s * key.length, (s + 1) * key.length);
    for (let i = 0; i < key.length; i++) acc[i] ^= stripe[i];
    diffuse(acc, hash);
  }
  const last = out.subarray((stripes - 1) * key.length);
  for (let i = 0; i < key.length; i++) last[i] = acc[i] ^ key[i];
  return out;
}

export interface LuksKeys {
  masterKey: Buffer;
  mkDigest: Buffer;
  mkDigestSalt: Buffer;
  mkDigestIters: number;
  slotSalt: Buffer;
  slotIters: number;
  /** Slot 0's split master key, encrypted. */
  material: Buffer;
}

export function makeKeys(spec: CipherSpec, hash: string, keyBytes: number, passphrase: Uint8Array, iterTime: number): LuksKeys {
  const masterKey = randomBytes(keyBytes);
  const mkDigestSalt = randomBytes(SALT_LEN);
  const mkDigestIters = scaled(iterationsPerSecond(hash, masterKey, mkDigestSalt, DIGEST_LEN), iterTime, 8);
  const mkDigest = pbkdf2(masterKey, mkDigestSalt, mkDigestIters, DIGEST_LEN, hash, 'LUKS master key digest');
  const slotSalt = randomBytes(SALT_LEN);
  const slotIters = scaled(iterationsPerSecond(hash, passphrase, slotSalt, keyBytes), iterTime, 1);
  const slotKey = pbkdf2(passphrase, slotSalt, slotIters, keyBytes, hash, 'LUKS key slot');
  const material = afSplit(masterKey, STRIPES, hash);
  new SectorEncryptor(spec, slotKey).encrypt(material, 0);
  return { masterKey, mkDigest, mkDigestSalt, mkDigestIters, slotSalt, slotIters, material };
}
