// Hash names as LUKS headers and qemu spell them, mapped to node:crypto's.
import { createHash } from 'node:crypto';
import { ImageError } from '../types.ts';

/** Digest length in bytes of each hash qemu's LUKS driver accepts. */
export const DIGEST_BYTES: Record<string, number> = { md5: 16, sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, ripemd160: 20 };

/** The node:crypto name of a qemu hash; every one qemu accepts exists in Node 20's OpenSSL. */
export function nodeHash(name: string): string {
  if (!Object.hasOwn(DIGEST_BYTES, name)) throw new ImageError(`Hash algorithm '${name}' not supported`);
  return name;
}

export function digest(name: string, ...parts: Uint8Array[]): Buffer {
  const h = createHash(nodeHash(name));
  for (const p of parts) h.update(p);
  return h.digest();
}
