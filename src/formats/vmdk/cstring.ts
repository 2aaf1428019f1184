// The descriptor is parsed the way qemu's C code reads it (strstr, sscanf over a NUL-terminated
// buffer), so that odd descriptors give the same answer. These helpers reproduce just the C
// semantics the VMDK parser relies on; everything works on latin1 strings (one char per byte).

const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const UINT64_MASK = (1n << 64n) - 1n;

/** The bytes up to the first NUL, as a latin1 string (what C string functions would see). */
export function cString(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return Buffer.from(bytes.buffer, bytes.byteOffset, nul < 0 ? bytes.length : nul).toString('latin1');
}

/**
 * Text cut out of a latin1 working string, as the UTF-8 it was written in: names and messages
 * leave the driver as text (invalid sequences become U+FFFD, as a UTF-8 reader of qemu's raw
 * bytes sees them).
 */
export function asText(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

/** C isspace() in the C locale. */
export function isSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r';
}

/** A cursor for a tiny sscanf: each conversion returns undefined on a matching failure. */
export class Scanner {
  constructor(readonly s: string, public pos: number) {}

  /** A blank in the format: skips any amount of white space, newlines included. */
  skipSpace(): void {
    while (isSpace(this.s[this.pos])) this.pos++;
  }

  /** `%Ns`: up to `max` non-space characters after skipping white space. */
  word(max: number): string | undefined {
    this.skipSpace();
    const start = this.pos;
    while (this.pos < this.s.length && this.pos - start < max && !isSpace(this.s[this.pos])) this.pos++;
    return this.pos > start ? this.s.slice(start, this.pos) : undefined;
  }

  /** `%lld` (glibc): optional sign and decimal digits, saturating at the int64 limits. */
  int64(): bigint | undefined {
    this.skipSpace();
    const m = /^[+-]?[0-9]+/.exec(this.s.slice(this.pos, this.pos + 4096));
    if (!m) return undefined;
    let digitsEnd = this.pos + m[0].length;
    while (digitsEnd < this.s.length && this.s[digitsEnd] >= '0' && this.s[digitsEnd] <= '9') digitsEnd++;
    const text = this.s.slice(this.pos, digitsEnd);
    this.pos = digitsEnd;
    // Very long digit runs only matter for saturation; cap the BigInt work.
    const v = text.length > 40 ? (text[0] === '-' ? INT64_MIN : INT64_MAX) : BigInt(text);
    return v > INT64_MAX ? INT64_MAX : v < INT64_MIN ? INT64_MIN : v;
  }

  /** A literal character in the format (no implicit white space skip). */
  literal(c: string): boolean {
    if (this.s[this.pos] !== c) return false;
    this.pos++;
    return true;
  }

  /** `%N[^set]`: one to `max` characters not in `stop`. */
  until(stop: string, max: number): string | undefined {
    const start = this.pos;
    while (this.pos < this.s.length && this.pos - start < max && !stop.includes(this.s[this.pos])) this.pos++;
    return this.pos > start ? this.s.slice(start, this.pos) : undefined;
  }
}

/**
 * `sscanf(p, "%x")` into a uint32 as glibc does it: optional sign and 0x prefix, the value read
 * as an unsigned long (saturating, negated for '-') and then truncated to 32 bits.
 */
export function scanHex32(s: string, pos: number): number | undefined {
  const sc = new Scanner(s, pos);
  sc.skipSpace();
  let neg = false;
  if (s[sc.pos] === '+' || s[sc.pos] === '-') neg = s[sc.pos++] === '-';
  let start = sc.pos;
  if (s[start] === '0' && (s[start + 1] === 'x' || s[start + 1] === 'X') && /[0-9a-fA-F]/.test(s[start + 2] ?? '')) start += 2;
  let end = start;
  while (end < s.length && /[0-9a-fA-F]/.test(s[end])) end++;
  if (end === start) {
    // "0x" with no hex digit after it still converts the 0.
    if (s[sc.pos] === '0') return 0;
    return undefined;
  }
  const digits = s.slice(start, end).replace(/^0+/, '');
  let v = digits.length > 16 ? UINT64_MASK : digits.length ? BigInt('0x' + digits) : 0n;
  if (neg) v = (-v) & UINT64_MASK;
  return Number(v & 0xffffffffn);
}
