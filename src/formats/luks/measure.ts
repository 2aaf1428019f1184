// qemu's block_crypto_measure for LUKS, and the LUKS header size a qcow2 image with
// encrypt.format=luks reserves (qcrypto_block_calculate_payload_offset). The header is 4 KiB,
// then 8 key slots, each the master key split into 4000 stripes, in whole 4 KiB-aligned sectors.
// The options are checked in the order qemu's QAPI visitor and LUKS creation check them.
import { ImageError, type MeasureCapability, type MeasureEnvironment } from '../types.ts';
import { RAW_CREATE_OPTIONS } from '../raw/measure.ts';

/** The LUKS creation options (block_crypto_create_opts_luks) and the file protocol's. */
const LUKS_CREATE_OPTIONS = {
  ...RAW_CREATE_OPTIONS,
  'key-secret': 'string', 'cipher-alg': 'string', 'cipher-mode': 'string', 'ivgen-alg': 'string', 'ivgen-hash-alg': 'string',
  'hash-alg': 'string', 'iter-time': 'number',
} as const;
/** 10.0 added detached-header (which its measure then refuses as unexpected). */
const LUKS_CREATE_OPTIONS_10 = { ...LUKS_CREATE_OPTIONS, 'detached-header': 'bool' } as const;

/** Master key bytes per cipher (QCryptoCipherAlgo); 'sm4' is in 10.0's enum only. */
const KEY_BYTES: Record<string, number> = {
  'aes-128': 16, 'aes-192': 24, 'aes-256': 32, des: 8, '3des': 24, 'cast5-128': 16, 'serpent-128': 16, 'serpent-192': 24,
  'serpent-256': 32, 'twofish-128': 16, 'twofish-192': 24, 'twofish-256': 32, sm4: 16,
};
/** Ciphers the enum has that qemu's crypto back end cannot use. */
const UNSUPPORTED = new Set(['des', '3des', 'sm4']);
const MODES = ['ecb', 'cbc', 'xts', 'ctr'];
const IVGENS = ['plain', 'plain64', 'essiv'];
const DIGEST_BYTES: Record<string, number> = { md5: 16, sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, ripemd160: 20, sm3: 32 };
/** ESSIV's cipher is the same family keyed by the digest: the families and their key sizes. */
const ESSIV_FAMILIES: Record<string, { label: string; sizes: number[] }> = {
  aes: { label: 'AES', sizes: [16, 24, 32] }, serpent: { label: 'Serpent', sizes: [16, 24, 32] }, twofish: { label: 'Twofish', sizes: [16, 24, 32] },
};

const SECTOR = 512;
const HEADER_SECTORS = 4096 / SECTOR;
const STRIPES = 4000;
const SLOTS = 8;
const SLOT_ALIGN_SECTORS = 4096 / SECTOR;

const newer = (env: MeasureEnvironment) => env.qemu.major >= 10;

/**
 * The bytes before the payload of a LUKS volume with these options (`get` reads one option by
 * its LUKS name; `prefix` is how the key-secret option is named in qemu's message).
 */
export function luksPayloadSize(get: (key: string) => string | undefined, prefix: string, env: MeasureEnvironment, extraKeys: readonly string[] = []): bigint {
  const enumValue = (key: string, allowed: readonly string[], fallback: string) => {
    const v = get(key);
    if (v !== undefined && !allowed.includes(v)) throw new ImageError(`Parameter '${key}' does not accept value '${v}'`);
    return v ?? fallback;
  };
  const hashes = Object.keys(DIGEST_BYTES).filter((h) => h !== 'sm3' || newer(env));
  const cipher = enumValue('cipher-alg', Object.keys(KEY_BYTES).filter((c) => c !== 'sm4' || newer(env)), 'aes-256');
  const mode = enumValue('cipher-mode', MODES, 'xts');
  const ivgen = enumValue('ivgen-alg', IVGENS, 'plain64');
  const ivgenHash = enumValue('ivgen-hash-alg', hashes, 'sha256');
  enumValue('hash-alg', hashes, 'sha256');
  // The visitor refuses what the LUKS struct does not have (10.0's detached-header option).
  for (const key of extraKeys) throw new ImageError(`Parameter '${key}' is unexpected`);
  const secret = get('key-secret');
  if (secret === undefined) throw new ImageError(`Parameter '${prefix}key-secret' is required for cipher`);
  if (!env.secretIds.has(secret)) throw new ImageError(`No secret with id '${secret}'`);
  if (UNSUPPORTED.has(cipher)) throw new ImageError(`Algorithm '${cipher}' not supported`);
  if (ivgen === 'essiv') {
    const family = ESSIV_FAMILIES[cipher.split('-')[0]];
    if (!family) throw new ImageError(`Cipher ${cipher} not supported with essiv`);
    const digest = DIGEST_BYTES[ivgenHash];
    if (!family.sizes.includes(digest)) throw new ImageError(`No ${family.label} cipher with key size ${digest} available`);
  }
  // XTS needs a 16-byte block: cast5 has 8.
  if (mode === 'xts' && cipher === 'cast5-128') throw new ImageError('Unsupported cipher mode xts');
  const keyBytes = KEY_BYTES[cipher] * (mode === 'xts' ? 2 : 1);
  // qemu encrypts each split key in whole sectors and asserts that it is one: it aborts otherwise.
  if ((keyBytes * STRIPES) % SECTOR !== 0) {
    throw new ImageError(`qemu-img aborts on a LUKS key of ${keyBytes} bytes with cipher-mode=${mode} (an assertion in its key-slot encryption); instar refuses it`);
  }
  const slotSectors = Math.ceil((keyBytes * STRIPES) / SECTOR / SLOT_ALIGN_SECTORS) * SLOT_ALIGN_SECTORS;
  return BigInt((HEADER_SECTORS + SLOTS * slotSectors) * SECTOR);
}

export const luksMeasure: MeasureCapability = {
  createOptions: (env) => (newer(env) ? LUKS_CREATE_OPTIONS_10 : LUKS_CREATE_OPTIONS),
  measure(options, input, env) {
    let size: bigint;
    if (input) {
      if (input.sizeError !== undefined) throw new ImageError(`Unable to get image virtual_size: ${input.sizeError}`);
      size = input.virtualSize;
    } else {
      size = BigInt(options.get('size') ?? '0');
    }
    const extra = options.has('detached-header') ? ['detached-header'] : [];
    const payload = luksPayloadSize((key) => options.get(key), '', env, extra);
    // Encrypted blocks are written whether allocated or not: no difference between the two.
    const total = BigInt.asUintN(64, payload + size);
    return { required: total, fullyAllocated: total };
  },
};
