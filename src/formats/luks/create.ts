// `create -f luks` (qemu's block_crypto_co_create_luks over qcrypto_block_luks_create): the
// options are checked as measure checks them (measure.ts, qemu's order and words), the secret is
// looked up by key-secret, and the layout is the LUKS1 header, key slot 0 and a payload of the
// disk's size left as a hole (qemu writes no encrypted zeros: a fresh volume reads as noise).
// The plan carries the passphrase to the guest, which does the key work (create-keys.ts).
import { randomBytes } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import { ImageError, type CreateCapability, type CreateEnvironment, type CreateOptionSpec, type CreatePlan } from '../types.ts';
import { luksPayloadSize } from './measure.ts';
import { makeKeys, STRIPES } from './create-keys.ts';
import { LUKS_MAGIC } from './header.ts';
import type { CipherSpec } from '../crypto/sector-cipher.ts';

export const LUKS_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'key-secret', type: 'string', help: 'ID of the secret that provides the keyslot passphrase' },
  { name: 'cipher-alg', type: 'string', help: 'Name of encryption cipher algorithm' },
  { name: 'cipher-mode', type: 'string', help: 'Name of encryption cipher mode' },
  { name: 'ivgen-alg', type: 'string', help: 'Name of IV generator algorithm' },
  { name: 'ivgen-hash-alg', type: 'string', help: 'Name of IV generator hash algorithm' },
  { name: 'hash-alg', type: 'string', help: 'Name of encryption hash algorithm' },
  { name: 'iter-time', type: 'number', help: 'Time to spend in PBKDF in milliseconds' },
];

const SECTOR = 512;
const HEADER_SECTORS = 8;
const SLOTS = 8;
const SLOT_ENABLED = 0x00ac71f3;
const SLOT_DISABLED = 0x0000dead;
const KEY_BYTES: Record<string, number> = { 128: 16, 192: 24, 256: 32 };

export interface LuksPlan {
  size: number;
  /** Bytes before the payload (header and key slots). */
  payload: number;
  spec: CipherSpec;
  hash: string;
  keyBytes: number;
  iterTime: number;
  /** The passphrase, hex. */
  passphrase: string;
  /** preallocation=full: the payload written with zeros. */
  allocate: boolean;
  /** preallocation=falloc: the payload reserved (by the trusted host, after the layout). */
  fallocate?: boolean;
}

/** The qemu release a create emulates ("10.0.2" → 10, 0); the newest rules without one. */
function release(env: CreateEnvironment | undefined): { major: number; minor: number } {
  const [major, minor] = (env?.qemuVersion ?? '10.0').split('.').map(Number);
  return { major, minor };
}

/**
 * The LUKS options of a create (`get` reads one by its LUKS name; `prefix` names key-secret in
 * messages, 'encrypt.' inside qcow2), checked in qemu's order, with the secret's bytes.
 */
export function luksPlan(get: (key: string) => string | undefined, prefix: string, size: bigint, env: CreateEnvironment | undefined): Omit<LuksPlan, 'allocate'> {
  const secrets = env?.secrets ?? new Map<string, Uint8Array>();
  const notUtf8 = () => {
    const id = get('key-secret');
    const secret = id === undefined ? undefined : secrets.get(id);
    return secret !== undefined && !isUtf8(secret) ? new ImageError(`Data from secret ${id} is not valid UTF-8`) : undefined;
  };
  let payload: bigint;
  try {
    payload = luksPayloadSize(get, prefix, { qemu: release(env), secretIds: new Set(secrets.keys()) });
  } catch (e) {
    // qemu reads the secret (as UTF-8) right after finding it, before it checks the cipher.
    const late = e instanceof ImageError && !e.message.startsWith('Parameter ') && !e.message.startsWith('No secret with id');
    throw (late && notUtf8()) || e;
  }
  const utf8Error = notUtf8();
  if (utf8Error) throw utf8Error;
  const secret = Buffer.from(secrets.get(get('key-secret')!)!);
  // qemu hands the passphrase on as a C string.
  const nul = secret.indexOf(0);
  const passphrase = nul < 0 ? secret : secret.subarray(0, nul);
  const alg = get('cipher-alg') ?? 'aes-256';
  const mode = get('cipher-mode') ?? 'xts';
  const ivgen = get('ivgen-alg') ?? 'plain64';
  const spec: CipherSpec = { alg, mode, ivgen, ...(ivgen === 'essiv' ? { ivHash: get('ivgen-hash-alg') ?? 'sha256' } : {}) };
  const keyBytes = KEY_BYTES[alg.split('-')[1]] * (mode === 'xts' ? 2 : 1);
  const iterTime = Number(get('iter-time') ?? 2000);
  const total = payload + size;
  if (!Number.isSafeInteger(Number(total)) || total >= 2n ** 63n) throw new ImageError('File too large', 'EFBIG');
  return { size: Number(size), payload: Number(payload), spec, hash: get('hash-alg') ?? 'sha256', keyBytes, iterTime, passphrase: passphrase.toString('hex') };
}

function plan(options: ReadonlyMap<string, string>, size: bigint, env?: CreateEnvironment): CreatePlan {
  // qemu parses preallocation before the LUKS options.
  const prealloc = options.get('preallocation') ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(prealloc)) throw new ImageError(`invalid parameter value: ${prealloc}`);
  // falloc reserves the payload (unwritten extents), which the trusted host does after the layout.
  const p: LuksPlan = { ...luksPlan((k) => options.get(k), '', size, env), allocate: prealloc === 'full', fallocate: prealloc === 'falloc' };
  return p as unknown as CreatePlan;
}

/** The master keys layout() made, by plan, for the writer opened right after it (same process). */
export const masterKeys = new WeakMap<object, Buffer>();

function uuid(): string {
  const b = randomBytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The header and slot 0's material of a new volume; `base` is where the header starts in its file. */
export function luksHeaderWrites(p: Omit<LuksPlan, 'allocate'>, base: number): { writes: { pos: number; bytes: Uint8Array }[]; masterKey: Buffer } {
  const keys = makeKeys(p.spec, p.hash, p.keyBytes, Buffer.from(p.passphrase, 'hex'), p.iterTime);
  const slotSectors = Math.ceil((p.keyBytes * STRIPES) / SECTOR / HEADER_SECTORS) * HEADER_SECTORS;
  const h = Buffer.alloc(592);
  LUKS_MAGIC.copy(h, 0);
  h.writeUInt16BE(1, 6);
  h.write(p.spec.alg.split('-')[0], 8, 'latin1');
  h.write(`${p.spec.mode}-${p.spec.ivgen}${p.spec.ivHash ? `:${p.spec.ivHash}` : ''}`, 40, 'latin1');
  h.write(p.hash, 72, 'latin1');
  h.writeUInt32BE(p.payload / SECTOR, 104);
  h.writeUInt32BE(p.keyBytes, 108);
  keys.mkDigest.copy(h, 112);
  keys.mkDigestSalt.copy(h, 132);
  h.writeUInt32BE(keys.mkDigestIters, 164);
  h.write(uuid(), 168, 'latin1');
  for (let i = 0; i < SLOTS; i++) {
    const o = 208 + i * 48;
    h.writeUInt32BE(i === 0 ? SLOT_ENABLED : SLOT_DISABLED, o);
    if (i === 0) {
      h.writeUInt32BE(keys.slotIters, o + 4);
      keys.slotSalt.copy(h, o + 8);
    }
    h.writeUInt32BE(HEADER_SECTORS + i * slotSectors, o + 40);
    h.writeUInt32BE(STRIPES, o + 44);
  }
  return { writes: [{ pos: base, bytes: h }, { pos: base + HEADER_SECTORS * SECTOR, bytes: keys.material }], masterKey: keys.masterKey };
}

export const luksCreate: CreateCapability = {
  options: LUKS_CREATE_OPTIONS,
  plan,
  layout(raw) {
    const p = raw as unknown as LuksPlan;
    const { writes, masterKey } = luksHeaderWrites(p, 0);
    masterKeys.set(raw, masterKey);
    return { image: { length: p.payload + p.size, writes, allocate: p.allocate } };
  },
};
