// LUKS2 images for the tests, made at test time by cryptsetup on regular files, and hostile
// variants of them (JSON rewritten in both header copies with fresh checksums, or damaged).
import { execFile } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import type { ImageDir } from './helpers.ts';

export const PASSPHRASE = 'pass';
const MiB = 1024 * 1024;

export function cryptsetup(images: ImageDir, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('cryptsetup', args, { cwd: images.dir, timeout: 120_000 }, (e, stdout, stderr) => {
      if (e) reject(new Error(`cryptsetup ${args.join(' ')} failed (is cryptsetup-bin installed? scripts/install-oracles.sh): ${stderr || e.message}`));
      else resolve(stdout);
    });
  });
}

/** Known plaintext: a pattern that differs in every 512-byte sector. */
export function plaintext(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return b;
}

/**
 * A LUKS2 volume encrypted by cryptsetup itself (offline `reencrypt --encrypt`, userspace crypto):
 * the file first holds `plain`, then cryptsetup encrypts it in place behind a new header. So the
 * ciphertext comes from code independent of instar's. Returns the plaintext the volume must hold.
 */
export async function encryptWithCryptsetup(images: ImageDir, name: string, options: string[], seed: number): Promise<Buffer> {
  const plain = plaintext(4 * MiB, seed);
  writeFileSync(images.path(name), Buffer.concat([plain, Buffer.alloc(16 * MiB)]));
  writeFileSync(images.path('key'), PASSPHRASE);
  await cryptsetup(images, ['reencrypt', '-q', '--encrypt', '--type', 'luks2', '--reduce-device-size', '16M', '--key-file', 'key', ...options, name]);
  return plain;
}

/** The volume key as cryptsetup prints it (--dump-volume-key with the passphrase in a key file). */
export async function dumpVolumeKey(images: ImageDir, name: string): Promise<Buffer> {
  const out = await cryptsetup(images, ['luksDump', '-q', '--dump-volume-key', '--key-file', 'key', name]);
  const at = out.indexOf('MK dump:');
  if (at < 0) throw new Error(`no MK dump in: ${out}`);
  return Buffer.from(out.slice(at + 'MK dump:'.length).replace(/[^0-9a-f]/gi, ''), 'hex');
}

/** The whole segment of a luksFormat-ed volume encrypted with node:crypto's aes-xts (IVs in 512-byte units). */
export function encryptPayload(path: string, key: Buffer, payloadOffset: number, sectorSize: number, plain: Buffer): void {
  const out = Buffer.alloc(plain.length);
  for (let at = 0; at < plain.length; at += sectorSize) {
    const iv = Buffer.alloc(16);
    iv.writeBigUInt64LE(BigInt(at / 512));
    const c = createCipheriv(`aes-${key.length * 4}-xts`, key, iv);
    c.update(plain.subarray(at, at + sectorSize)).copy(out, at);
  }
  writeAt(path, payloadOffset, out);
}

export function writeAt(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

/** The JSON metadata of a LUKS2 file's primary header. */
export function readJson(path: string): Record<string, unknown> {
  const b = readFileSync(path);
  const size = Number(b.readBigUInt64BE(8));
  const area = b.subarray(4096, size);
  return JSON.parse(area.toString('utf8', 0, area.indexOf(0)));
}

export interface RewriteOptions {
  /** Leave no NUL in the JSON area (the text padded with spaces). */
  noNul?: boolean;
  /** Damage the checksum instead of recomputing it. */
  badChecksum?: boolean;
  /** Copies to rewrite (both by default). */
  copies?: ('primary' | 'secondary')[];
}

/** Copies `from` to `to` with the JSON text of the chosen header copies replaced, checksums recomputed. */
export function rewriteJson(from: string, to: string, json: string, opts: RewriteOptions = {}): void {
  const b = readFileSync(from);
  const size = Number(b.readBigUInt64BE(8));
  for (const copy of opts.copies ?? ['primary', 'secondary']) {
    const base = copy === 'primary' ? 0 : size;
    const area = b.subarray(base + 4096, base + size);
    area.fill(opts.noNul ? 0x20 : 0);
    const text = Buffer.from(json);
    if (text.length > area.length - (opts.noNul ? 0 : 1)) throw new Error('JSON too long for the area');
    text.copy(area);
    b.fill(0, base + 448, base + 512);
    const sum = createHash('sha256').update(b.subarray(base, base + size)).digest();
    if (opts.badChecksum) sum[0] ^= 1;
    sum.copy(b, base + 448);
  }
  writeFileSync(to, b);
}
