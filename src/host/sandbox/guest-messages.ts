// The host's reading of the guest's message stream: newline-delimited JSON on fd 3. The guest
// is untrusted, so every line is size-checked, parsed and shape-checked before use, and any
// text it sends is cleaned before it can reach a terminal.
import { INT64_DECIMAL, MAX_MAP_ENTRIES, MAX_MESSAGE_BYTES, MAX_UNREADABLE_BYTES, MAX_WARNINGS, MAX_WARNING_TEXT, type DeviceRole, type GuestMessage, type GuestWarning } from '../../protocol/messages.ts';
import { escapeForTerminal } from '../../output/terminal.ts';
import { MAX_DISCARD_RANGES } from '../../io/discard-set.ts';

const ROLES: ReadonlySet<string> = new Set<DeviceRole>(['input', 'backing', 'data-file', 'extent', 'output']);
const MAX_TEXT = 4096;
const MAX_FILES = 256;

/** One line, no control characters (C0, DEL, C1, bidi overrides), bounded length. */
export function cleanGuestText(text: string, max = MAX_TEXT): string {
  const one = text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]+/g, ' ').trim();
  return one.length > max ? one.slice(0, max) + '…' : one;
}

/** Most lines of one error (qemu's hints add a line or two). */
const MAX_ERROR_LINES = 8;

/**
 * An error's text for stderr: its lines kept (qemu's error hints are lines of their own), every
 * other control character escaped as names from an image are (output/terminal.ts), bounded.
 */
export function cleanGuestError(text: string): string {
  const lines = text.split('\n').slice(0, MAX_ERROR_LINES);
  return lines.map((l) => escapeForTerminal(l.length > MAX_TEXT ? l.slice(0, MAX_TEXT) + '…' : l)).join('\n');
}

/** Warnings for stderr: at most MAX_WARNINGS, each one escaped line of bounded length. */
export function cleanGuestWarnings(warnings: readonly GuestWarning[]): GuestWarning[] {
  return warnings.slice(0, MAX_WARNINGS).map((w) => ({
    text: escapeForTerminal(w.text.length > MAX_WARNING_TEXT ? w.text.slice(0, MAX_WARNING_TEXT) + '…' : w.text),
    prefixed: w.prefixed,
    ...(w.unterminated === true ? { unterminated: true } : {}),
    ...(w.source !== undefined ? { source: w.source } : {}),
  }));
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

/**
 * A map entry's start or length past 2^53: a virtual size can reach 2^63 (qcow2 with 2 MiB
 * clusters: 2^61), and its cluster-aligned offsets are integers a double holds exactly.
 */
function isByteDouble(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 2 ** 63;
}

/** An optional warnings list: bounded in count and length (the guest cuts its own to fit). */
function warningsOk(v: unknown): boolean {
  return v === undefined || (Array.isArray(v) && v.length <= MAX_WARNINGS && v.every((w) =>
    isObj(w) && onlyKeys(w, ['text', 'prefixed', 'unterminated', 'source']) && typeof w.text === 'string' && w.text.length <= MAX_WARNING_TEXT + 1 &&
    typeof w.prefixed === 'boolean' && (w.unterminated === undefined || w.unterminated === true) &&
    (w.source === undefined || (Number.isSafeInteger(w.source) && (w.source as number) >= 0))));
}

/** Per message type: its allowed keys and a check of their values. */
const SHAPES: Record<GuestMessage['type'], { keys: string[]; ok: (o: Obj) => boolean }> = {
  progress: { keys: ['type', 'done', 'total'], ok: (o) => isCount(o.done) && isCount(o.total) },
  'map-entries': {
    keys: ['type', 'entries'],
    ok: (o) => Array.isArray(o.entries) && o.entries.length <= MAX_MAP_ENTRIES &&
      // [start, length, depth, flags, offset or -1, file or -1]
      o.entries.every((e) => Array.isArray(e) && e.length === 6 && e.every((n, i) => (i === 4 && isInt64String(n)) || (i < 2 && isByteDouble(n)) || (Number.isSafeInteger(n) && n >= (i < 4 ? 0 : -1)))),
  },
  unreadable: {
    keys: ['type', 'kind', 'offset', 'length', 'reason', 'notice'],
    ok: (o) => (o.kind === 'read' || o.kind === 'block-status') && Number.isSafeInteger(o.offset) && (o.offset as number) >= 0 &&
      (o.offset as number) % 512 === 0 && Number.isSafeInteger(o.length) && (o.length as number) > 0 && (o.length as number) % 512 === 0 &&
      (o.length as number) <= MAX_UNREADABLE_BYTES && typeof o.reason === 'string' && o.reason.length <= MAX_TEXT &&
      (o.notice === undefined || (typeof o.notice === 'string' && o.notice.length <= MAX_TEXT)),
  },
  freed: {
    keys: ['type', 'device', 'ranges'],
    // Order, alignment and the file's bounds are checked where the ranges are used (freed-ranges.ts).
    ok: (o) => Number.isSafeInteger(o.device) && (o.device as number) >= 0 && Array.isArray(o.ranges) && o.ranges.length <= MAX_DISCARD_RANGES &&
      o.ranges.every((r) => Array.isArray(r) && r.length === 3 && r.every((n) => Number.isSafeInteger(n) && n >= 0)),
  },
  result: { keys: ['type', 'value', 'warnings'], ok: (o) => 'value' in o && warningsOk(o.warnings) },
  error: { keys: ['type', 'message', 'warnings'], ok: (o) => typeof o.message === 'string' && warningsOk(o.warnings) },
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
  const warnings = value.warnings === undefined ? {} : { warnings: cleanGuestWarnings(value.warnings as GuestWarning[]) };
  if (value.type === 'error') return { type: 'error', message: cleanGuestError(value.message as string), ...warnings };
  if (value.type === 'result') return { type: 'result', value: value.value, ...warnings };
  if (value.type === 'unreadable') {
    const notice = typeof value.notice === 'string' ? { notice: cleanGuestText(value.notice) } : {};
    return { ...(value as unknown as GuestMessage & { type: 'unreadable' }), reason: cleanGuestText(value.reason as string), ...notice };
  }
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
