// `amend` of a LUKS1 volume's key slots, as qemu's crypto/block-luks.c amends them (a luks file,
// or the LUKS header inside a qcow2 file): `state=active` stores the master key under a new
// passphrase in the first free slot (or the one `keyslot` names), `state=inactive` erases the
// slots an old passphrase opens (or the one `keyslot` names). Checks in qemu's order, with its
// words. The writes keep qemu's order, which is the crash-safe one: a new slot's material goes
// down before the header that marks the slot active; an erased slot is marked inactive in the
// header before its material is overwritten (40 passes of random bytes).
import { randomBytes, randomFillSync } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import type { AmendContext, AmendPlan, BlockDevice } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { readAt } from '../bytes.ts';
import { optionItems } from '../../option-list.ts';
import { afSplit } from '../crypto/af-splitter.ts';
import { MAX_PBKDF2_ITERATIONS, pbkdf2 } from '../crypto/kdf.ts';
import { LUKS_HEADER_SIZE, NUM_KEY_SLOTS, SLOT_DISABLED, SLOT_ENABLED, luksKeyFields, parseLuksHeader, type LuksInfo, type LuksKeyFields } from './header.ts';
import { cipherSpec, openKeySlot, unlockMasterKey } from './unlock.ts';
import { iterationsPerSecond } from './create-keys.ts';
import { SectorEncryptor } from './encrypt.ts';

/** Where a volume's LUKS header is: `base` in `dev`; qcow2 keeps it inside an area of `areaLength` bytes. */
export interface LuksVolume {
  dev: BlockDevice;
  base: number;
  areaLength?: bigint;
}

const SALT_LEN = 32;
const MIN_SLOT_ITERS = 1000;
const DEFAULT_ITER_TIME = 2000n;
const ERASE_PASSES = 40;
const UINT64_MAX = 2n ** 64n - 1n;
const UINT32_MAX = 2n ** 32n - 1n;

/** An error qemu reports; `hint` is its appended hint, printed without a newline; `written`: what qemu wrote before it. */
class AmendError extends Error {
  constructor(message: string, readonly hint?: string, readonly written: RepairStep[] = []) {
    super(message);
  }
}

/** QCryptoBlockAmendOptionsLUKS as qemu's option visitor fills it (fields in schema order). */
interface Request {
  active: boolean;
  newSecret?: string;
  oldSecret?: string;
  keyslot?: number;
  iterTime?: bigint;
}

/**
 * A number option as the visitor's int64 parse (strtoll, base 0) reads its text; QemuOpts took
 * the same text as a uint64 first, so "-1" passes both and "18446744073709551615" only the first.
 */
function int64(name: string, text: string): bigint {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (!m) throw new AmendError(`Parameter '${name}' expects a number`);
  const digits = m[2];
  const magnitude = /^0[0-7]+$/.test(digits) ? BigInt('0o' + digits.slice(1)) : BigInt(digits);
  const negative = m[1] === '-';
  if (magnitude > (negative ? 2n ** 63n : 2n ** 63n - 1n)) throw new AmendError(`Parameter '${name}' expects integer`);
  return negative ? -magnitude : magnitude;
}

/** The request from the option list's last values, `prefix` being 'encrypt.' inside qcow2. */
function readRequest(optionList: string, prefix: string): Request {
  const text = new Map<string, string>();
  for (const [name, value] of optionItems(optionList)) if (name.startsWith(prefix)) text.set(name.slice(prefix.length), value);
  const state = text.get('state');
  if (state === undefined) throw new AmendError("Parameter 'state' is missing");
  if (state !== 'active' && state !== 'inactive') throw new AmendError(`Parameter 'state' does not accept value '${state}'`);
  const number = (name: string): bigint | undefined => {
    const raw = text.get(name);
    return raw === undefined ? undefined : int64(name, raw);
  };
  const keyslot = number('keyslot');
  const iterTime = number('iter-time');
  return {
    active: state === 'active',
    newSecret: text.get('new-secret'),
    oldSecret: text.get('old-secret'),
    // qemu keeps the slot number in a C int.
    keyslot: keyslot === undefined ? undefined : Number(BigInt.asIntN(32, keyslot)),
    iterTime,
  };
}

/** qcrypto_secret_lookup_as_utf8: the passphrase a secret id names. */
function lookupPassphrase(id: string, ctx: AmendContext): Buffer {
  const data = ctx.secrets.get(id);
  if (data === undefined) throw new AmendError(`No secret with id '${id}'`);
  // GLib's validation refuses NUL bytes too.
  if (!isUtf8(data) || data.includes(0)) throw new AmendError(`Data from secret ${id} is not valid UTF-8`);
  return Buffer.from(data);
}

/** The key the volume was opened with, as qemu takes it (a C string). */
function openPassphrase(ctx: AmendContext): Buffer {
  const key = Buffer.from(ctx.key ?? new Uint8Array());
  const nul = key.indexOf(0);
  return nul < 0 ? key : key.subarray(0, nul);
}

interface Volume extends LuksVolume {
  header: Buffer;
  info: LuksInfo;
  fields: LuksKeyFields;
  /** The header as the plan has changed it so far. */
  next: Buffer;
}

const splitKeyLength = (v: Volume, i: number): number => v.fields.keyBytes * v.fields.slots[i].stripes;

/** Whether a write stays inside qcow2's crypto area (qemu's header write function checks it). */
const insideArea = (v: Volume, offset: number, length: number): boolean => v.areaLength === undefined || BigInt(offset + length) <= v.areaLength;
const OUTSIDE_AREA = 'Request for data outside of extension header';

/** qemu's load_key of slot i: whether the passphrase opens it (a read outside qcow2's area fails the amend). */
function opens(v: Volume, i: number, passphrase: Buffer): boolean {
  try {
    return openKeySlot(v.dev, v.base, v.info, v.fields, i, passphrase, v.areaLength) !== undefined;
  } catch (e) {
    if (e instanceof Error && e.message === OUTSIDE_AREA) throw new AmendError(OUTSIDE_AREA);
    throw e;
  }
}

function setSlot(header: Buffer, i: number, active: boolean, iterations: number, salt: Uint8Array): void {
  const o = 208 + i * 48;
  header.writeUInt32BE(active ? SLOT_ENABLED : SLOT_DISABLED, o);
  header.writeUInt32BE(iterations, o + 4);
  header.set(salt, o + 8);
}

const headerWrite = (v: Volume): RepairStep => ({ kind: 'write', pos: v.base, bytes: Buffer.from(v.next) });

/** qemu's iteration count for `iterTime` ms: its overflow checks, then at least 1000. */
function slotIterations(v: Volume, passphrase: Buffer, salt: Buffer, iterTime: bigint, slot: number): number {
  const perSecond = BigInt(Math.round(iterationsPerSecond(v.info['hash-alg'], passphrase, salt, v.fields.keyBytes)));
  const time = BigInt.asUintN(64, iterTime);
  const hint = `Failed to write to keyslot ${slot}`;
  if (time !== 0n && perSecond > UINT64_MAX / time) {
    throw new AmendError(`PBKDF iterations ${perSecond} too large to scale: Numerical result out of range`, hint);
  }
  const iters = (perSecond * time) / 1000n;
  if (iters > UINT32_MAX) throw new AmendError(`PBKDF iterations ${iters} larger than ${UINT32_MAX}: Numerical result out of range`, hint);
  const n = Math.max(Number(iters), MIN_SLOT_ITERS);
  if (n > MAX_PBKDF2_ITERATIONS) {
    throw new AmendError(`instar cannot amend this image: iter-time=${iterTime} asks for ${n} PBKDF2 iterations, more than instar runs (${MAX_PBKDF2_ITERATIONS}); nothing was written`);
  }
  return n;
}

/** qcrypto_block_luks_amend_add_keyslot. */
function addKeySlot(v: Volume, r: Request, ctx: AmendContext): RepairStep[] {
  if (r.newSecret === undefined) throw new AmendError("'new-secret' is required to activate a keyslot");
  if (r.oldSecret !== undefined) throw new AmendError("'old-secret' must not be given when activating keyslots");
  let slot: number;
  if (r.keyslot !== undefined) {
    slot = r.keyslot;
    // qemu prints the slot with %u here.
    if (slot < 0 || slot >= NUM_KEY_SLOTS) throw new AmendError(`Invalid keyslot ${slot >>> 0} specified, must be between 0 and ${NUM_KEY_SLOTS - 1}`);
  } else {
    slot = v.fields.slots.findIndex((s) => !s.active);
    if (slot < 0) throw new AmendError("Can't add a keyslot - all keyslots are in use");
  }
  if (!ctx.force && v.fields.slots[slot].active) throw new AmendError(`Refusing to overwrite active keyslot ${slot} - please erase it first`);
  let masterKey: Buffer;
  try {
    masterKey = unlockMasterKey(v.dev, v.base, v.info, v.fields, openPassphrase(ctx), v.areaLength);
  } catch (e) {
    if (e instanceof Error && (e.message.startsWith('Invalid password') || e.message === OUTSIDE_AREA)) throw new AmendError(e.message, 'Failed to retrieve the master key');
    throw e;
  }
  const passphrase = lookupPassphrase(r.newSecret, ctx);
  const keyOffset = v.fields.slots[slot].keyOffset;
  const salt = randomBytes(SALT_LEN);
  const iterations = slotIterations(v, passphrase, salt, r.iterTime ?? DEFAULT_ITER_TIME, slot);
  // The material's write is the first: outside the area, nothing is written.
  if (!insideArea(v, keyOffset, splitKeyLength(v, slot))) throw new AmendError(OUTSIDE_AREA, `Failed to write to keyslot ${slot}`);
  const slotKey = pbkdf2(passphrase, salt, iterations, v.fields.keyBytes, v.info['hash-alg'], 'LUKS key slot');
  const material = afSplit(masterKey, v.fields.slots[slot].stripes, v.info['hash-alg']);
  new SectorEncryptor(cipherSpec(v.info), slotKey).encrypt(material, 0);
  setSlot(v.next, slot, true, iterations, salt);
  return [{ kind: 'write', pos: v.base + keyOffset, bytes: material }, { kind: 'barrier' }, headerWrite(v)];
}

/** qcrypto_block_luks_erase_key: the header first, then the material overwritten pass by pass (`done`: the erasures before). */
function eraseKeySlot(v: Volume, slot: number, done: readonly RepairStep[]): RepairStep[] {
  const length = splitKeyLength(v, slot);
  const pos = v.base + v.fields.slots[slot].keyOffset;
  setSlot(v.next, slot, false, 0, Buffer.alloc(SALT_LEN));
  const steps: RepairStep[] = [headerWrite(v), { kind: 'barrier' }];
  // qemu's header write succeeds, then its first wipe fails.
  if (!insideArea(v, v.fields.slots[slot].keyOffset, length)) throw new AmendError(OUTSIDE_AREA, `Failed to erase keyslot ${slot}`, [...done, ...steps]);
  for (let pass = 0; pass < ERASE_PASSES; pass++) {
    steps.push({ kind: 'fill', pos, length, fill: (buf) => randomFillSync(buf) }, { kind: 'barrier' });
  }
  return steps;
}

/** qcrypto_block_luks_amend_erase_keyslots. */
function eraseKeySlots(v: Volume, r: Request, ctx: AmendContext): RepairStep[] {
  if (r.newSecret !== undefined) throw new AmendError("'new-secret' must not be given when erasing keyslots");
  if (r.iterTime !== undefined) throw new AmendError("'iter-time' must not be given when erasing keyslots");
  const oldPassphrase = r.oldSecret === undefined ? undefined : lookupPassphrase(r.oldSecret, ctx);
  const activeCount = v.fields.slots.filter((s) => s.active).length;
  if (r.keyslot !== undefined) {
    const slot = r.keyslot;
    if (slot < 0 || slot >= NUM_KEY_SLOTS) throw new AmendError(`Invalid keyslot ${slot} specified, must be between 0 and ${NUM_KEY_SLOTS - 1}`);
    if (oldPassphrase && !opens(v, slot, oldPassphrase)) {
      throw new AmendError(`Given keyslot ${slot} doesn't contain the given old password for erase operation`);
    }
    if (!ctx.force && !v.fields.slots[slot].active) throw new AmendError(`Given keyslot ${slot} is already erased (inactive) `);
    if (!ctx.force && activeCount === 1) {
      throw new AmendError(`Attempt to erase the only active keyslot ${slot} which will erase all the data in the image irreversibly - refusing operation`);
    }
    return eraseKeySlot(v, slot, []);
  }
  if (!oldPassphrase) {
    throw new AmendError('To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given');
  }
  const matching = v.fields.slots.map((_, i) => i).filter((i) => opens(v, i, oldPassphrase));
  if (matching.length === 0) throw new AmendError('No keyslots match given (old) password for erase operation');
  if (!ctx.force && matching.length === activeCount) {
    throw new AmendError('All the active keyslots match the (old) password that was given and erasing them will erase all the data in the image irreversibly - refusing operation');
  }
  const steps: RepairStep[] = [];
  for (const slot of matching) steps.push(...eraseKeySlot(v, slot, steps));
  return steps;
}

/**
 * The plan of qemu's amend of the LUKS1 volume in `volume` (qcrypto_block_luks_amend_options),
 * with the options under `prefix`. Errors qemu reports come back as its lines; nothing is
 * written before the plan is complete.
 */
export function planKeySlotAmend(volume: LuksVolume, prefix: string, ctx: AmendContext): AmendPlan {
  try {
    const r = readRequest(ctx.optionList, prefix);
    const header = readAt(volume.dev, BigInt(volume.base), LUKS_HEADER_SIZE);
    const v: Volume = { ...volume, header, info: parseLuksHeader(header), fields: luksKeyFields(header), next: Buffer.from(header) };
    return { steps: r.active ? addKeySlot(v, r, ctx) : eraseKeySlots(v, r, ctx) };
  } catch (e) {
    if (!(e instanceof AmendError)) throw e;
    if (e.message.startsWith('instar ')) return { refused: e.message };
    return e.hint === undefined ? { steps: e.written, error: [e.message] } : { steps: e.written, error: [e.message], errorHint: e.hint };
  }
}
