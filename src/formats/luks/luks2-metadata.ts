// The LUKS2 JSON metadata, checked and typed: key slots (luks2 type, AF "luks1", raw area, a
// pbkdf2/argon2i/argon2id KDF), digests (pbkdf2) and the data segment (crypt). Every value is
// untrusted: strings that hold 64-bit numbers are parsed as BigInt and narrowed only when safe;
// anything instar does not implement is refused by name rather than guessed at.
import { ImageError } from '../types.ts';
import { DIGEST_BYTES } from '../crypto/hash.ts';
import type { CipherSpec } from '../crypto/sector-cipher.ts';
import { cipherAlgName } from './header.ts';
import type { Luks2Header } from './luks2-header.ts';

export type Luks2Kdf =
  | { type: 'pbkdf2'; hash: string; iterations: number; salt: Buffer }
  | { type: 'argon2i' | 'argon2id'; time: number; memory: number; cpus: number; salt: Buffer };

export interface Luks2Keyslot {
  id: number;
  /** Volume key length in bytes. */
  keySize: number;
  priority: number;
  stripes: number;
  afHash: string;
  areaOffset: number;
  areaSize: number;
  /** The cipher of the key material area, its key length (the KDF's output). */
  areaCipher: CipherSpec;
  areaKeySize: number;
  kdf: Luks2Kdf;
}

export interface Luks2Digest {
  keyslots: number[];
  segments: number[];
  hash: string;
  iterations: number;
  salt: Buffer;
  digest: Buffer;
}

export interface Luks2Segment {
  offset: number;
  /** undefined: "dynamic" (to the end of the device). */
  size?: number;
  ivTweak: bigint;
  encryption: string;
  sectorSize: number;
}

export interface Luks2Metadata {
  keyslots: Luks2Keyslot[];
  digests: Luks2Digest[];
  segment: Luks2Segment;
  /** The digest that covers the data segment. */
  segmentDigest: Luks2Digest;
  jsonSize: number;
  keyslotsSize: number;
}

const bad = (what: string): ImageError => new ImageError(`LUKS2 metadata: ${what}`);

/** A string from the metadata, shortened and kept to printable ASCII so a message stays one line. */
const clip = (s: string): string => s.slice(0, 40).replace(/[^\x20-\x7e]/g, '?');

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${what} is not an object`);
  return v as Record<string, unknown>;
}

function str(o: Record<string, unknown>, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string') throw bad(`${what}.${key} is missing or not a string`);
  return v;
}

function int(o: Record<string, unknown>, key: string, what: string, min = 0, max = 2 ** 32): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`${what}.${key} is not an integer from ${min} to ${max}`);
  return v;
}

/** A u64 written as a decimal string (LUKS2 stores offsets and sizes so), narrowed to a safe number. */
function u64(o: Record<string, unknown>, key: string, what: string): number {
  const s = str(o, key, what);
  if (!/^[0-9]{1,20}$/.test(s)) throw bad(`${what}.${key} '${clip(s)}' is not a decimal number`);
  const v = BigInt(s);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${what}.${key} ${s} is too large`);
  return Number(v);
}

function base64(o: Record<string, unknown>, key: string, what: string, maxLen: number): Buffer {
  const s = str(o, key, what);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw bad(`${what}.${key} is not base64`);
  const b = Buffer.from(s, 'base64');
  if (b.length === 0 || b.length > maxLen) throw bad(`${what}.${key} has ${b.length} bytes`);
  return b;
}

function hashName(o: Record<string, unknown>, key: string, what: string): string {
  const h = str(o, key, what);
  if (!Object.hasOwn(DIGEST_BYTES, h)) throw bad(`${what}: hash '${clip(h)}' not supported`);
  return h;
}

/** Object keys that are LUKS2 ids ("0" … "31"), sorted numerically. */
function ids(o: Record<string, unknown>, what: string): number[] {
  return Object.keys(o).map((k) => {
    if (!/^(0|[1-9][0-9]?)$/.test(k) || Number(k) > 31) throw bad(`${what} id '${clip(k)}' is invalid`);
    return Number(k);
  }).sort((a, b) => a - b);
}

function idList(v: unknown, what: string): number[] {
  if (!Array.isArray(v) || v.length > 32) throw bad(`${what} is not a list of ids`);
  return v.map((x) => {
    if (typeof x !== 'string' || !/^(0|[1-9][0-9]?)$/.test(x)) throw bad(`${what} holds an invalid id`);
    return Number(x);
  });
}

/** "aes-xts-plain64" (cryptsetup's cipher-mode-ivgen[:hash]) with a key length → the sector cipher spec. */
export function parseEncryption(spec: string, keyBytes: number, what: string): CipherSpec {
  const m = /^([a-z0-9_]+)-([a-z0-9]+)(?:-([a-z0-9]+)(?::([a-z0-9]+))?)?$/.exec(spec);
  if (!m) throw bad(`${what}: encryption '${clip(spec)}' not supported`);
  const [, cipher, mode, ivgen = 'plain', ivHash] = m;
  if (!['ecb', 'cbc', 'xts', 'ctr'].includes(mode)) throw bad(`${what}: cipher mode '${mode}' not supported`);
  if (!['plain', 'plain64', 'essiv'].includes(ivgen)) throw bad(`${what}: IV generator '${ivgen}' not supported`);
  if ((ivgen === 'essiv') !== (ivHash !== undefined) || (ivHash !== undefined && !Object.hasOwn(DIGEST_BYTES, ivHash))) {
    throw bad(`${what}: IV generator '${ivgen}${ivHash ? `:${ivHash}` : ''}' not supported`);
  }
  const alg = cipherAlgName(cipher, mode === 'xts' ? keyBytes / 2 : keyBytes);
  if (!alg) throw bad(`${what}: cipher '${cipher}' with a ${keyBytes}-byte key not supported`);
  return { alg, mode, ivgen, ...(ivHash ? { ivHash } : {}) };
}

function parseKdf(v: unknown, what: string): Luks2Kdf {
  const k = obj(v, what);
  const type = str(k, 'type', what);
  const salt = base64(k, 'salt', what, 64);
  if (type === 'pbkdf2') return { type, hash: hashName(k, 'hash', what), iterations: int(k, 'iterations', what, 1), salt };
  if (type === 'argon2i' || type === 'argon2id') {
    return { type, time: int(k, 'time', what, 1), memory: int(k, 'memory', what, 1), cpus: int(k, 'cpus', what, 1), salt };
  }
  throw bad(`${what}: KDF '${clip(type)}' not supported`);
}

function parseKeyslot(id: number, v: unknown, hdr: Luks2Header, keyslotsSize: number): Luks2Keyslot | undefined {
  const what = `keyslot ${id}`;
  const k = obj(v, what);
  // Other slot types (reencrypt) hold no volume key: not candidates for unlocking.
  if (str(k, 'type', what) !== 'luks2') return undefined;
  const keySize = int(k, 'key_size', what, 1, 128);
  const af = obj(k.af, `${what}.af`);
  if (str(af, 'type', `${what}.af`) !== 'luks1') throw bad(`${what}: AF type '${clip(String(af.type))}' not supported`);
  const stripes = int(af, 'stripes', `${what}.af`, 1, 4000);
  const area = obj(k.area, `${what}.area`);
  if (str(area, 'type', `${what}.area`) !== 'raw') throw bad(`${what}: area type '${clip(String(area.type))}' not supported`);
  const areaOffset = u64(area, 'offset', `${what}.area`);
  const areaSize = u64(area, 'size', `${what}.area`);
  const areaKeySize = int(area, 'key_size', `${what}.area`, 1, 128);
  // The key material lies in the keyslots area, between the two header copies' end and its end.
  const areaStart = 2 * hdr.headerSize;
  if (areaOffset < areaStart || areaOffset + areaSize > areaStart + keyslotsSize) throw bad(`${what}: area lies outside the keyslots area`);
  if (Math.ceil((keySize * stripes) / 512) * 512 > areaSize) throw bad(`${what}: key material does not fit its area`);
  const priority = k.priority === undefined ? 1 : int(k, 'priority', what, 0, 2);
  return {
    id, keySize, priority, stripes,
    afHash: hashName(af, 'hash', `${what}.af`),
    areaOffset, areaSize, areaKeySize,
    areaCipher: parseEncryption(str(area, 'encryption', `${what}.area`), areaKeySize, `${what}.area`),
    kdf: parseKdf(k.kdf, `${what}.kdf`),
  };
}

function parseSegment(id: number, v: unknown): Luks2Segment {
  const what = `segment ${id}`;
  const s = obj(v, what);
  const type = str(s, 'type', what);
  if (type !== 'crypt') throw bad(`${what}: type '${clip(type)}' not supported`);
  if (s.integrity !== undefined) throw bad(`${what}: integrity protection (dm-integrity) not supported`);
  const sizeText = str(s, 'size', what);
  const ivText = str(s, 'iv_tweak', what);
  if (!/^[0-9]{1,20}$/.test(ivText)) throw bad(`${what}.iv_tweak is not a decimal number`);
  const sectorSize = int(s, 'sector_size', what, 512, 4096);
  if (![512, 1024, 2048, 4096].includes(sectorSize)) throw bad(`${what}: sector size ${sectorSize} is invalid`);
  const segment: Luks2Segment = {
    offset: u64(s, 'offset', what),
    size: sizeText === 'dynamic' ? undefined : u64(s, 'size', what),
    ivTweak: BigInt(ivText),
    encryption: str(s, 'encryption', what),
    sectorSize,
  };
  if (segment.offset % sectorSize !== 0 || (segment.size ?? 0) % sectorSize !== 0) throw bad(`${what}: offset or size is not a multiple of its sector size`);
  return segment;
}

/** Parses and checks the JSON area of a LUKS2 header. */
export function parseLuks2Metadata(hdr: Luks2Header): Luks2Metadata {
  let root: Record<string, unknown>;
  try {
    root = obj(JSON.parse(hdr.json), 'the JSON area');
  } catch (e) {
    if (e instanceof ImageError) throw e;
    throw bad('the JSON area is not valid JSON');
  }
  const config = obj(root.config, 'config');
  const jsonSize = u64(config, 'json_size', 'config');
  const keyslotsSize = u64(config, 'keyslots_size', 'config');
  if (jsonSize !== hdr.headerSize - 4096) throw bad(`config.json_size ${jsonSize} does not match the header size ${hdr.headerSize}`);
  const slotsObj = obj(root.keyslots, 'keyslots');
  const keyslots: Luks2Keyslot[] = [];
  for (const id of ids(slotsObj, 'keyslot')) {
    const slot = parseKeyslot(id, slotsObj[String(id)], hdr, keyslotsSize);
    if (slot) keyslots.push(slot);
  }
  const segObj = obj(root.segments, 'segments');
  const segIds = ids(segObj, 'segment');
  if (segIds.length !== 1) throw bad(`${segIds.length} data segments (a reencryption in progress?) are not supported`);
  const segment = parseSegment(segIds[0], segObj[String(segIds[0])]);
  const digObj = obj(root.digests, 'digests');
  const digests = ids(digObj, 'digest').map((id): Luks2Digest => {
    const what = `digest ${id}`;
    const d = obj(digObj[String(id)], what);
    if (str(d, 'type', what) !== 'pbkdf2') throw bad(`${what}: type '${clip(String(d.type))}' not supported`);
    return {
      keyslots: idList(d.keyslots, `${what}.keyslots`),
      segments: idList(d.segments, `${what}.segments`),
      hash: hashName(d, 'hash', what),
      iterations: int(d, 'iterations', what, 1),
      salt: base64(d, 'salt', what, 64),
      digest: base64(d, 'digest', what, 64),
    };
  });
  const segmentDigest = digests.find((d) => d.segments.includes(segIds[0]));
  if (!segmentDigest) throw bad(`no digest covers segment ${segIds[0]}`);
  return { keyslots, digests, segment, segmentDigest, jsonSize, keyslotsSize };
}
