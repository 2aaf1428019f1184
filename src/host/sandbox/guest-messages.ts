// The host's reading of the guest's message stream: newline-delimited JSON on fd 3. The guest
// is untrusted, so every line is size-checked, parsed and shape-checked before use, and any
// text it sends is cleaned before it can reach a terminal.
import { INT64_DECIMAL, MAX_MAP_ENTRIES, MAX_MESSAGE_BYTES, type DeviceRole, type GuestMessage } from '../../protocol/messages.ts';

const ROLES: ReadonlySet<string> = new Set<DeviceRole>(['input', 'backing', 'data-file', 'extent', 'output']);
const MAX_TEXT = 4096;
const MAX_FILES = 256;

/** One line, no control characters (C0, DEL, C1, bidi overrides), bounded length. */
export function cleanGuestText(text: string, max = MAX_TEXT): string {
  const one = text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]+/g, ' ').trim();
  return one.length > max ? one.slice(0, max) + '…' : one;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const onlyKeys = (o: Obj, keys: string[]) => Object.keys(o).every((k) => keys.includes(k));

/** A map entry's host offset beyond a safe integer: an int64 in decimal. */
function isInt64String(v: unknown): boolean {
  if (typeof v !== 'string' || !INT64_DECIMAL.test(v)) return false;
  const n = BigInt(v);
  return n === BigInt.asIntN(64, n);
}

/** Per message type: its allowed keys and a check of their values. */
const SHAPES: Record<GuestMessage['type'], { keys: string[]; ok: (o: Obj) => boolean }> = {
  progress: { keys: ['type', 'done', 'total'], ok: (o) => isCount(o.done) && isCount(o.total) },
  'map-entries': {
    keys: ['type', 'entries'],
    ok: (o) => Array.isArray(o.entries) && o.entries.length <= MAX_MAP_ENTRIES &&
      // [start, length, depth, flags, offset or -1, file or -1]
      o.entries.every((e) => Array.isArray(e) && e.length === 6 && e.every((n, i) => (i === 4 && isInt64String(n)) || (Number.isSafeInteger(n) && n >= (i < 4 ? 0 : -1)))),
  },
  result: { keys: ['type', 'value'], ok: (o) => 'value' in o },
  error: { keys: ['type', 'message'], ok: (o) => typeof o.message === 'string' },
  'need-files': {
    keys: ['type', 'files'],
    ok: (o) =>
      Array.isArray(o.files) &&
      o.files.length <= MAX_FILES &&
      o.files.every(
        (f) =>
          isObj(f) &&
          onlyKeys(f, ['role', 'name', 'format', 'referrer']) &&
          (f.referrer === undefined || (Number.isInteger(f.referrer) && (f.referrer as number) >= 0)) &&
          typeof f.role === 'string' && ROLES.has(f.role) &&
          typeof f.name === 'string' && f.name.length <= MAX_TEXT &&
          (f.format === undefined || (typeof f.format === 'string' && f.format.length <= 64)),
      ),
  },
};

/** The message on one line, or a string saying why the line is not a valid message. */
export function parseGuestMessage(line: string): GuestMessage | string {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return 'not JSON';
  }
  if (!isObj(value) || typeof value.type !== 'string') return 'not a message object';
  const shape = Object.prototype.hasOwnProperty.call(SHAPES, value.type) ? SHAPES[value.type as GuestMessage['type']] : undefined;
  if (!shape) return `unknown message type '${cleanGuestText(value.type, 40)}'`;
  if (!onlyKeys(value, shape.keys) || !shape.ok(value)) return `malformed '${value.type}' message`;
  if (value.type === 'error') return { type: 'error', message: cleanGuestText(value.message as string) };
  return value as unknown as GuestMessage;
}

/** Splits a byte stream into lines, refusing any line longer than MAX_MESSAGE_BYTES. */
export class LineSplitter {
  private parts: Buffer[] = [];
  private pending = 0;

  constructor(private readonly maxLine = MAX_MESSAGE_BYTES) {}

  /** Complete lines in this chunk, or a string when a line grew too long. */
  push(chunk: Buffer): string[] | { tooLong: true } {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      if (this.pending + nl - start > this.maxLine) return { tooLong: true };
      this.parts.push(chunk.subarray(start, nl));
      lines.push(Buffer.concat(this.parts).toString('utf8'));
      this.parts = [];
      this.pending = 0;
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.pending += chunk.length - start;
      if (this.pending > this.maxLine) return { tooLong: true };
      this.parts.push(chunk.subarray(start));
    }
    return lines;
  }

  /** Bytes after the last newline (a guest that died mid-message). */
  get leftover(): number {
    return this.pending;
  }
}
