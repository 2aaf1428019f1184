// --object secret,id=ID,data=…|file=…[,format=raw|base64]: the secrets qemu-img takes for
// encrypted images. The host reads secret files itself (the user named them, not an image) and
// hands the guest only key bytes, in the op's options; the guest never sees a path.
import { createDecipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseQemuOpts } from './commands/image-opts.ts';
import { InputImageError, type Target } from './input-image.ts';
import { strerror } from '../strerror.ts';

/** A failure in qemu's words (printed as "<progname>: <message>", exit status 1). */
export class SecretError extends InputImageError {}

/** User-creatable object types qemu has and instar does not implement (anything else is qemu's "does not accept"). */
const OTHER_QEMU_OBJECTS = /^(secret_keyring|tls-creds-(anon|psk|x509)|tls-cipher-suites|authz-(list|listfile|pam|simple)|iothread|throttle-group|memory-backend-\w+|main-loop|rng-\w+|filter-\w+|colo-compare|input-\w+|can-\w+|cryptodev-\w+|dbus-vmstate|pr-manager-helper|x-remote-object|sev-guest)$/;
const SECRET_KEYS = new Set(['qom-type', 'id', 'data', 'file', 'format', 'keyid', 'iv', 'loaded']);
const IDENTIFIER = /^[A-Za-z][A-Za-z0-9._-]*$/;

/** qemu's qbase64_decode accepts the alphabet, '=' and newlines, then decodes leniently. */
function decodeBase64(text: string): Buffer {
  if (!/^[A-Za-z0-9+/=\n]*$/.test(text)) throw new SecretError('Base64 data contains invalid characters');
  return Buffer.from(text.replace(/\n/g, ''), 'base64');
}

function readSecretFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    // glib's g_file_get_contents wording, with its curly quotes, after qemu's prefix.
    throw new SecretError(`Unable to read ${path}: Failed to open file \u201c${path}\u201d: ${strerror(code)}`);
  }
}

/**
 * A secret whose data is encrypted with another secret (keyid=…,iv=…): AES-256-CBC under that
 * secret (32 bytes), the IV in base64, then a PKCS#7-style pad whose length byte qemu checks for
 * range only. Checks and wording in qemu's order.
 */
function decryptSecret(key: Buffer, ivText: string | undefined, ciphertext: Buffer): Buffer {
  if (key.length !== 32) throw new SecretError('Key should be 32 bytes in length');
  if (ivText === undefined) throw new SecretError('IV is required to decrypt secret');
  const iv = decodeBase64(ivText);
  if (iv.length !== 16) throw new SecretError(`IV should be 16 bytes in length not ${iv.length}`);
  if (ciphertext.length % 16 !== 0) throw new SecretError(`Length ${ciphertext.length} must be a multiple of block size 16`);
  if (ciphertext.length === 0) return Buffer.alloc(0);
  const d = createDecipheriv('aes-256-cbc', key, iv);
  d.setAutoPadding(false);
  const plain = Buffer.concat([d.update(ciphertext), d.final()]);
  const pad = plain[plain.length - 1];
  if (pad > 16 || pad > plain.length) throw new SecretError(`Incorrect number of padding bytes (${pad}) found on decrypted data`);
  return plain.subarray(0, plain.length - pad);
}

/**
 * One more --object, created as its option comes, as qemu's getopt loop creates it: false (after
 * printing qemu's line to `err`) when it is refused and the command stops there.
 */
export function addObject(objects: string[], value: string, err: (text: string) => void, progname: string): boolean {
  objects.push(value);
  try {
    parseSecretObjects(objects);
    return true;
  } catch (e) {
    if (!(e instanceof SecretError)) throw e;
    err(`${progname}: ${e.message}\n`);
    return false;
  }
}

/** Every --object value, in command-line order; secrets by id, or qemu's error for the first bad one. */
export function parseSecretObjects(values: readonly string[]): Map<string, Buffer> {
  const secrets = new Map<string, Buffer>();
  for (const value of values) {
    const opts = parseQemuOpts(value, 'qom-type');
    const type = opts.get('qom-type');
    if (type === undefined) throw new SecretError("Parameter 'qom-type' is missing");
    if (type === 'help') throw new SecretError('instar does not list object types (--object help)');
    if (type !== 'secret') {
      if (OTHER_QEMU_OBJECTS.test(type)) throw new SecretError(`instar supports only --object secret, not '${type}'`);
      throw new SecretError(`Parameter 'qom-type' does not accept value '${type}'`);
    }
    const id = opts.get('id');
    if (id === undefined) throw new SecretError("Parameter 'id' is missing");
    if (!IDENTIFIER.test(id)) {
      throw new SecretError("Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
    }
    for (const key of opts.keys()) if (!SECRET_KEYS.has(key)) throw new SecretError(`Parameter '${key}' is unexpected`);
    const format = opts.get('format') ?? 'raw';
    if (format !== 'raw' && format !== 'base64') throw new SecretError(`Parameter 'format' does not accept value '${format}'`);
    if (secrets.has(id)) throw new SecretError(`attempt to add duplicate property '${id}' to object (type 'container')`);
    const data = opts.get('data');
    const file = opts.get('file');
    if (data !== undefined && file !== undefined) throw new SecretError("'file' and 'data' are mutually exclusive");
    if (data === undefined && file === undefined) throw new SecretError("Either 'file' or 'data' must be provided");
    const keyid = opts.get('keyid');
    const raw = data !== undefined ? Buffer.from(data, 'utf8') : readSecretFile(file!);
    if (keyid !== undefined) {
      const key = secrets.get(keyid);
      if (!key) throw new SecretError(`No secret with id '${keyid}'`);
      secrets.set(id, decryptSecret(key, opts.get('iv'), format === 'base64' ? decodeBase64(raw.toString('latin1')) : raw));
      continue;
    }
    secrets.set(id, format === 'base64' ? decodeBase64(raw.toString('latin1')) : raw);
  }
  return secrets;
}

/** The keys the images' key-secret options name, base64 by input index, for the op's options. */
export function sourceSecrets(objects: readonly string[], targets: readonly Target[]): Record<number, string> {
  const secrets = parseSecretObjects(objects);
  const byIndex: Record<number, string> = {};
  targets.forEach((t, i) => {
    if (t.keySecret === undefined) return;
    const secret = secrets.get(t.keySecret);
    if (!secret) throw new SecretError(`Could not open '${t.errorName}': No secret with id '${t.keySecret}'`);
    byIndex[i] = secret.toString('base64');
  });
  return byIndex;
}
