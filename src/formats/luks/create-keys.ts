// The key material of a new LUKS1 volume, as qemu's qcrypto_block_luks_create makes it: a random
// master key; its PBKDF2 digest with an iteration count benchmarked from iter-time (divided by 8,
// as cryptsetup does, at least 1000); key slot 0 with its own benchmarked count (at least 1000),
// the passphrase's PBKDF2 key encrypting the anti-forensic split of the master key (4000 stripes)
// as sectors from IV 0. The counts come from timing this machine, so they are not qemu's numbers
// (nor the same from run to run): qemu's are not reproducible either.
import { randomBytes } from 'node:crypto';
import { ImageError } from '../types.ts';
import { MAX_PBKDF2_ITERATIONS, pbkdf2 } from '../crypto/kdf.ts';
import type { CipherSpec } from '../crypto/sector-cipher.ts';
import { SectorEncryptor } from './encrypt.ts';
import { afSplit } from '../crypto/af-splitter.ts';

export const STRIPES = 4000;
const DIGEST_LEN = 20;
const SALT_LEN = 32;
const MIN_ITERATIONS = 1000;
/** How long the benchmark runs PBKDF2 at least (qemu times 500 ms of CPU; less is precise enough). */
const BENCH_MS = 25;

/** PBKDF2 iterations per second of `hash` for this password, salt and output length. */
export function iterationsPerSecond(hash: string, password: Uint8Array, salt: Uint8Array, keyLen: number): number {
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
