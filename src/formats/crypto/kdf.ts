// PBKDF2 for LUKS key slots and the master-key digest, with a ceiling on the work a header may
// ask for: an image chooses its own iteration counts, so they are checked before any time is spent.
import { pbkdf2Sync } from 'node:crypto';
import { ImageError } from '../types.ts';
import { nodeHash } from './hash.ts';

/**
 * Most PBKDF2 iterations instar runs for one derivation. cryptsetup calibrates counts to about 1-2 s
 * of a fast CPU (a few million for sha256); 10^8 is well above any real header and still bounded.
 */
export const MAX_PBKDF2_ITERATIONS = 100_000_000;

export function pbkdf2(password: Uint8Array, salt: Uint8Array, iterations: number, keyLen: number, hash: string, what: string): Buffer {
  if (!Number.isSafeInteger(iterations) || iterations < 1 || iterations > MAX_PBKDF2_ITERATIONS) {
    throw new ImageError(`${what}: PBKDF2 iteration count ${iterations} is outside what instar accepts (1 to ${MAX_PBKDF2_ITERATIONS})`);
  }
  return pbkdf2Sync(password, salt, iterations, keyLen, nodeHash(hash));
}
