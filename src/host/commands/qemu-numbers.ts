// qemu-img's number parsing for dd's operands and bench's options, per profile. 7.2 parses sizes
// with cvtnum_full (qemu_strtosz, a two-line message for bad text) and plain counts with
// qemu_strtoul (one fixed message each); 10.0 parses both through cvtnum_full, counts with
// qemu_strtoi64 (base 0: 0x hex, leading-0 octal), and quotes the bad text.
import type { Profile } from '../../output/profile.ts';
import { strtosz } from './map-size.ts';

export const INT_MAX = 2147483647n;
export const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

/** A parsed value, qemu's lines for a refused one (each printed after "<progname>: "), and a warning line to print first. */
export type Parsed = { value: bigint; warning?: string } | { error: string[] };

/**
 * C's strtol/strtoul family with base 0 as qemu's wrappers take it: leading white space, a sign,
 * 0x hex or leading-0 octal; the whole text must be used. The value is signed and unbounded.
 */
export function parseCInteger(text: string): bigint | 'invalid' {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (!m) return 'invalid';
  const digits = m[2];
  const magnitude = /^0[xX]/.test(digits) ? BigInt(digits) : digits.length > 1 && digits[0] === '0' ? BigInt('0o' + digits.slice(1)) : BigInt(digits);
  return m[1] === '-' ? -magnitude : magnitude;
}

const suffixHelp = (name: string) => [
  `Invalid ${name} specified. You may use k, M, G, T, P or E suffixes for`,
  'kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
];
const rangeError = (name: string, min: bigint, max: bigint) => [`Invalid ${name} specified. Must be between ${min} and ${max}.`];

/** cvtnum_full(name, text, is_size = true, min, max): a byte size with an optional suffix. */
export function parseSizeOption(name: string, text: string, min: bigint, max: bigint, profile: Profile): Parsed {
  const r = strtosz(text, profile.newUsageErrors, INT64_MAX);
  if (r === 'invalid') return { error: profile.newUsageErrors ? [`Invalid ${name} specified: '${text}'.`] : suffixHelp(name) };
  if (r === 'range' || r.value < min || r.value > max) return { error: rangeError(name, min, max) };
  return { value: r.value, warning: r.hexSuffix ? `warning: Using a multiplier suffix on hex numbers is deprecated: ${text}` : undefined };
}

/** 10.0's cvtnum_full(name, text, is_size = false, min, max): qemu_strtoi64, base 0. */
export function parseIntegerOption(name: string, text: string, min: bigint, max: bigint): Parsed {
  const v = parseCInteger(text);
  if (v === 'invalid') return { error: [`Invalid ${name} specified: '${text}'.`] };
  if (v < min || v > max) return { error: rangeError(name, min, max) };
  return { value: v };
}

/**
 * 7.2's `qemu_strtoul(text, NULL, 0, &n) < 0 || n > max` with its one message: a negative number
 * wraps to a huge unsigned one (only -0 passes), a number past 2^64 saturates.
 */
export function parseUnsignedOption(message: string, text: string, max: bigint): Parsed {
  const v = parseCInteger(text);
  if (v === 'invalid') return { error: [message] };
  const wrapped = v < 0n ? (-v > UINT64_MAX ? UINT64_MAX : BigInt.asUintN(64, v)) : v;
  if (wrapped > max) return { error: [message] };
  return { value: wrapped };
}
