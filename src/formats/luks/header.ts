// The LUKS1 header (cryptsetup's on-disk format 1.2.1) parsed the way qemu's crypto/block-luks.c
// does when it opens a volume without I/O (qemu-img info): checks, names, and what it reports.
import { ImageError } from '../types.ts';
import { cString } from '../bytes.ts';

export const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]); // "LUKS\xba\xbe"
export const LUKS_HEADER_SIZE = 592;
export const NUM_KEY_SLOTS = 8;
const STRIPES = 4000;
const SECTOR = 512;
const KEY_SLOT_OFFSET_SECTORS = 4096 / SECTOR;
export const SLOT_ENABLED = 0x00ac71f3;
export const SLOT_DISABLED = 0x0000dead;

/** QAPI QCryptoBlockInfoLUKSSlot, keys in schema order. */
export interface LuksSlotInfo {
  active: boolean;
  iters?: number;
  stripes?: number;
  'key-offset': number;
}

/** QAPI QCryptoBlockInfoLUKS, keys in schema order ('detached-header' exists since qemu 9.0). */
export interface LuksInfo {
  'cipher-alg': string;
  'cipher-mode': string;
  'ivgen-alg': string;
  'ivgen-hash-alg'?: string;
  'hash-alg': string;
  'detached-header': boolean;
  'payload-offset': number;
  'master-key-iters': number;
  uuid: string;
  slots: LuksSlotInfo[];
}

const CIPHER_MODES = ['ecb', 'cbc', 'xts', 'ctr'];
const HASHES: Record<string, number> = { md5: 16, sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, ripemd160: 20 };
const IVGENS = ['plain', 'plain64', 'essiv'];
/** LUKS cipher names to qemu algorithm names by key length in bytes. */
const CIPHERS: Record<string, Record<number, string>> = {
  aes: { 16: 'aes-128', 24: 'aes-192', 32: 'aes-256' },
  cast5: { 16: 'cast5-128' },
  serpent: { 16: 'serpent-128', 24: 'serpent-192', 32: 'serpent-256' },
  twofish: { 16: 'twofish-128', 24: 'twofish-192', 32: 'twofish-256' },
};

/** qemu's algorithm name for a LUKS cipher name and key length in bytes ("aes", 32 → "aes-256"). */
export function cipherAlgName(cipher: string, keyBytes: number): string | undefined {
  return Object.hasOwn(CIPHERS, cipher) ? CIPHERS[cipher][keyBytes] : undefined;
}

interface Slot {
  active: number;
  iterations: number;
  keyOffset: number;
  stripes: number;
}

/** Sectors one key slot's material takes, in qemu's unsigned int arithmetic. */
function splitKeySectors(keyLen: number, stripes: number): number {
  const sectors = (BigInt(keyLen) * BigInt(stripes) + BigInt(SECTOR - 1)) / BigInt(SECTOR);
  const aligned = ((sectors + BigInt(KEY_SLOT_OFFSET_SECTORS - 1)) / BigInt(KEY_SLOT_OFFSET_SECTORS)) * BigInt(KEY_SLOT_OFFSET_SECTORS);
  return Number(aligned & 0xffffffffn);
}

function lookup(list: string[] | Record<string, number>, name: string, what: string): string {
  const known = Array.isArray(list) ? list.includes(name) : Object.hasOwn(list, name);
  if (!known) throw new ImageError(`${what} '${name}' not supported`);
  return name;
}

/** Parses the 592-byte header; `hdr` must hold exactly those bytes. */
export function parseLuksHeader(hdr: Uint8Array): LuksInfo {
  const b = Buffer.from(hdr.buffer, hdr.byteOffset, LUKS_HEADER_SIZE);
  if (!b.subarray(0, 6).equals(LUKS_MAGIC)) throw new ImageError('Volume is not in LUKS format');
  const version = b.readUInt16BE(6);
  if (version !== 1) throw new ImageError(`LUKS version ${version} is not supported`);
  const cipherNameField = b.subarray(8, 40);
  const cipherModeField = b.subarray(40, 72);
  const hashField = b.subarray(72, 104);
  if (!cipherNameField.includes(0)) throw new ImageError('LUKS header cipher name is not NUL terminated');
  if (!cipherModeField.includes(0)) throw new ImageError('LUKS header cipher mode is not NUL terminated');
  if (!hashField.includes(0)) throw new ImageError('LUKS header hash spec is not NUL terminated');
  const payloadSectors = b.readUInt32BE(104);
  const keyBytes = b.readUInt32BE(108);
  const masterKeyIters = b.readUInt32BE(164);
  if (payloadSectors < KEY_SLOT_OFFSET_SECTORS) throw new ImageError('LUKS payload is overlapping with the header');
  if (masterKeyIters === 0) throw new ImageError('LUKS key iteration count is zero');

  const slots: Slot[] = [];
  for (let i = 0; i < NUM_KEY_SLOTS; i++) {
    const o = 208 + i * 48;
    slots.push({ active: b.readUInt32BE(o), iterations: b.readUInt32BE(o + 4), keyOffset: b.readUInt32BE(o + 40), stripes: b.readUInt32BE(o + 44) });
  }
  checkSlots(slots, keyBytes, payloadSectors);

  const modeSpec = cString(cipherModeField);
  const dash = modeSpec.indexOf('-');
  if (dash < 0) throw new ImageError(`Unexpected cipher mode string format '${modeSpec}'`);
  const ivSpec = modeSpec.slice(dash + 1);
  const colon = ivSpec.indexOf(':');
  const ivgenName = colon < 0 ? ivSpec : ivSpec.slice(0, colon);
  const ivHash = colon < 0 ? undefined : lookup(HASHES, ivSpec.slice(colon + 1), 'Hash algorithm');
  const cipherMode = lookup(CIPHER_MODES, modeSpec.slice(0, dash), 'Cipher mode');
  const cipherName = cString(cipherNameField);
  const cipherKeyBytes = cipherMode === 'xts' ? Math.floor(keyBytes / 2) : keyBytes;
  const cipherAlg = Object.hasOwn(CIPHERS, cipherName) ? CIPHERS[cipherName][cipherKeyBytes] : undefined;
  if (!cipherAlg) throw new ImageError(`Algorithm '${cipherName}' with key size ${cipherKeyBytes | 0} bytes not supported`);
  const hashAlg = lookup(HASHES, cString(hashField), 'Hash algorithm');
  const ivgenAlg = lookup(IVGENS, ivgenName, 'IV generator');
  if (ivgenAlg === 'essiv') {
    if (!ivHash) throw new ImageError('Missing IV generator hash specification');
    checkEssivCipher(cipherAlg, HASHES[ivHash]);
  }

  return {
    'cipher-alg': cipherAlg,
    'cipher-mode': cipherMode,
    'ivgen-alg': ivgenAlg,
    ...(ivgenAlg === 'essiv' ? { 'ivgen-hash-alg': ivHash } : {}),
    'hash-alg': hashAlg,
    'detached-header': false,
    'payload-offset': payloadSectors * SECTOR,
    'master-key-iters': masterKeyIters,
    uuid: cString(b.subarray(168, 208)),
    slots: slots.map((s) => {
      const active = s.active === SLOT_ENABLED;
      return active
        ? { active, iters: s.iterations, stripes: s.stripes, 'key-offset': s.keyOffset * SECTOR }
        : { active, 'key-offset': s.keyOffset * SECTOR };
    }),
  };
}

function checkSlots(slots: Slot[], keyBytes: number, payloadSectors: number): void {
  slots.forEach((s, i) => {
    const len = splitKeySectors(keyBytes, s.stripes);
    if (s.stripes !== STRIPES) throw new ImageError(`Keyslot ${i} is corrupted (stripes ${s.stripes | 0} != ${STRIPES})`);
    if (s.active !== SLOT_DISABLED && s.active !== SLOT_ENABLED) throw new ImageError(`Keyslot ${i} state (active/disable) is corrupted`);
    if (s.active === SLOT_ENABLED && s.iterations === 0) throw new ImageError(`Keyslot ${i} iteration count is zero`);
    if (s.keyOffset < KEY_SLOT_OFFSET_SECTORS) throw new ImageError(`Keyslot ${i} is overlapping with the LUKS header`);
    if ((s.keyOffset + len) >>> 0 > payloadSectors) throw new ImageError(`Keyslot ${i} is overlapping with the encrypted payload`);
    for (let j = i + 1; j < slots.length; j++) {
      const t = slots[j];
      const len2 = splitKeySectors(keyBytes, t.stripes);
      if ((s.keyOffset + len) >>> 0 > t.keyOffset && (t.keyOffset + len2) >>> 0 > s.keyOffset) {
        throw new ImageError(`Keyslots ${i} and ${j} are overlapping in the header`);
      }
    }
  });
}

/** dm-crypt's ESSIV uses a cipher whose key length is the hash's digest length. */
function checkEssivCipher(cipherAlg: string, digestLen: number): void {
  const [family, bits] = cipherAlg.split('-');
  if (Number(bits) / 8 === digestLen) return;
  const sizes = CIPHERS[family];
  if (family === 'cast5' || !sizes) throw new ImageError(`Cipher ${cipherAlg} not supported with essiv`);
  if (!sizes[digestLen]) {
    const label = { aes: 'AES', serpent: 'Serpent', twofish: 'Twofish' }[family];
    throw new ImageError(`No ${label} cipher with key size ${digestLen} available`);
  }
}

/** What unlocking needs beyond LuksInfo: the raw key-slot and master-key digest fields. */
export interface LuksKeyFields {
  keyBytes: number;
  mkDigest: Buffer;
  mkDigestSalt: Buffer;
  mkDigestIters: number;
  slots: { active: boolean; iterations: number; salt: Buffer; keyOffset: number; stripes: number }[];
}

/** The unlocking fields of a header parseLuksHeader accepted. */
export function luksKeyFields(hdr: Uint8Array): LuksKeyFields {
  const b = Buffer.from(hdr.buffer, hdr.byteOffset, LUKS_HEADER_SIZE);
  const slots = [];
  for (let i = 0; i < NUM_KEY_SLOTS; i++) {
    const o = 208 + i * 48;
    slots.push({
      active: b.readUInt32BE(o) === SLOT_ENABLED,
      iterations: b.readUInt32BE(o + 4),
      salt: Buffer.from(b.subarray(o + 8, o + 40)),
      keyOffset: b.readUInt32BE(o + 40) * SECTOR,
      stripes: b.readUInt32BE(o + 44),
    });
  }
  return {
    keyBytes: b.readUInt32BE(108),
    mkDigest: Buffer.from(b.subarray(112, 132)),
    mkDigestSalt: Buffer.from(b.subarray(132, 164)),
    mkDigestIters: b.readUInt32BE(164),
    slots,
  };
}
