// qemu-img's cvtnum() for map's --start-offset/--max-length: a byte count with an optional
// fraction and a k/M/G/T/P/E suffix (binary units), per the emulated version's rules and wording.
import type { Profile } from '../../output/profile.ts';

const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const UNITS: Record<string, bigint> = { b: 1n, k: 2n ** 10n, m: 2n ** 20n, g: 2n ** 30n, t: 2n ** 40n, p: 2n ** 50n, e: 2n ** 60n };

export type SizeResult = { value: bigint; warning?: string } | { error: string };

/**
 * Parses like qemu_strtosz: 'invalid' text or 'range' for a value past `max` (cvtnum's INT64_MAX;
 * UINT64_MAX for a size in an option list) or negative in 10.0.
 */
export function strtosz(text: string, newRules: boolean, max = INT64_MAX): { value: bigint; hexSuffix: boolean } | 'invalid' | 'range' {
  let s = text.replace(/^[ \t\n\v\f\r]+/, '');
  let negative = false;
  if (s[0] === '+' || s[0] === '-') {
    negative = s[0] === '-';
    s = s.slice(1);
  }
  // 7.2 takes no sign at all for a size; 10.0 parses the number and then calls it out of range.
  if (negative && !newRules) return 'invalid';
  let m = /^0[xX]([0-9a-fA-F]+)(.*)$/s.exec(s);
  let integer: bigint;
  let fraction = '';
  let rest: string;
  const hex = m !== null;
  if (m) {
    integer = BigInt('0x' + m[1]);
    rest = m[2];
    if (rest.startsWith('.')) return 'invalid';
  } else {
    m = (newRules ? /^(\d*)(?:\.(\d*))?(.*)$/s : /^(\d+)(?:\.(\d*))?(.*)$/s).exec(s);
    if (!m || (m[1] === '' && m[2] === undefined) || (m[1] === '' && m[2] === '')) return 'invalid';
    integer = BigInt(m[1] || '0');
    fraction = m[2] ?? '';
    rest = m[3];
    if (/^[eE][-+]?\d/.test(rest) && m[2] !== undefined) return 'invalid';
  }
  if (integer > UINT64_MAX) return 'range';
  let unit = 1n;
  if (rest.length > 0 && UNITS[rest[0].toLowerCase()] !== undefined) {
    unit = UNITS[rest[0].toLowerCase()];
    rest = rest.slice(1);
    if (hex && newRules) return 'invalid';
  }
  if (rest.length > 0) return 'invalid';
  const hasFraction = /[1-9]/.test(fraction);
  // A fraction needs a unit to scale it.
  if (hasFraction && unit === 1n) return 'invalid';
  const part = hasFraction ? BigInt(Math.round(Number('0.' + fraction) * Number(unit))) : 0n;
  const value = integer * unit + part;
  if (value > UINT64_MAX || value > max) return 'range';
  if (negative) return value === 0n && !newRules ? 'invalid' : 'range';
  return { value, hexSuffix: hex && unit !== 1n };
}

/** cvtnum("start offset" | "max length", text) with the profile's wording. */
export function parseMapSize(what: string, text: string, profile: Profile): SizeResult {
  const r = strtosz(text, profile.newUsageErrors);
  if (r === 'range') return { error: `Invalid ${what} specified. Must be between 0 and ${INT64_MAX}.` };
  if (r === 'invalid') {
    return profile.newUsageErrors
      ? { error: `Invalid ${what} specified: '${text}'.` }
      : { error: `Invalid ${what} specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.` };
  }
  return { value: r.value, warning: r.hexSuffix ? `warning: Using a multiplier suffix on hex numbers is deprecated: ${text}` : undefined };
}
