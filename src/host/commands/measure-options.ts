// measure's -o: qemu's option-list syntax (accumulate_options, opts_do_parse) and the per-type
// checks of each value (qemu_opt_parse), with qemu's wording. Every occurrence is checked in order;
// the last value of each option is what the driver then sees, normalized.
import type { CreateOptionType } from '../../formats/types.ts';
import { strtosz } from './map-size.ts';
import { optionItems } from '../../option-list.ts';

const UINT64_MAX = 2n ** 64n - 1n;

/** A failure in qemu's words: lines for "<progname>: " (the hint lines stand alone). */
export class OptionListError extends Error {
  constructor(readonly lines: { text: string; prefixed: boolean }[]) {
    super(lines[0]?.text ?? '');
  }
}

/** is_valid_option_list: not empty, no leading ',', and no unpaired trailing ','. */
export function isValidOptionList(text: string): boolean {
  if (text === '' || text.startsWith(',')) return false;
  const trailing = text.length - text.replace(/,+$/, '').length;
  return trailing % 2 === 0;
}

// Split here once; re-exported for the host's other option checks.
export { optionItems };

const TRUE = new Set(['on', 'yes', 'true', 'y']);
const FALSE = new Set(['off', 'no', 'false', 'n']);

/** strtoull with base 0 over the whole text, as qemu_strtou64 (a '-' wraps modulo 2^64). */
function parseNumber(name: string, text: string): bigint {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (!m) throw new OptionListError([{ text: `Parameter '${name}' expects a number`, prefixed: true }]);
  const digits = m[2];
  const value = /^0[xX]/.test(digits) ? BigInt(digits) : digits.length > 1 && digits.startsWith('0') ? BigInt('0o' + digits.slice(1)) : BigInt(digits);
  if (value > UINT64_MAX) throw new OptionListError([{ text: `Value '${text}' is too large for parameter '${name}'`, prefixed: true }]);
  return m[1] === '-' ? BigInt.asUintN(64, -value) : value;
}

function parseSize(name: string, text: string, newRules: boolean): bigint {
  const r = strtosz(text, newRules, UINT64_MAX);
  if (r === 'range') throw new OptionListError([{ text: `Value '${text}' is out of range for parameter '${name}'`, prefixed: true }]);
  if (r === 'invalid') {
    throw new OptionListError([
      { text: `Parameter '${name}' expects a non-negative number below 2^64`, prefixed: true },
      { text: 'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-', prefixed: false },
      { text: 'and exabytes, respectively.', prefixed: false },
    ]);
  }
  return r.value;
}

/**
 * qemu_opts_do_parse of the accumulated list against a driver's create options: the first bad
 * item fails; otherwise the last value of each option, normalized for the driver.
 */
export function parseCreateOptions(text: string | undefined, table: Readonly<Record<string, CreateOptionType>>, newRules: boolean): Map<string, string> {
  const values = new Map<string, string>();
  for (const [name, raw] of text === undefined ? [] : optionItems(text)) {
    const type = Object.hasOwn(table, name) ? table[name] : undefined;
    if (type === undefined) throw new OptionListError([{ text: `Invalid parameter '${name}'`, prefixed: true }]);
    let value = raw;
    if (type === 'bool') {
      if (!TRUE.has(raw) && !FALSE.has(raw)) throw new OptionListError([{ text: `Parameter '${name}' expects 'on' or 'off'`, prefixed: true }]);
      value = TRUE.has(raw) ? 'on' : 'off';
    } else if (type === 'number') {
      value = parseNumber(name, raw).toString();
    } else if (type === 'size') {
      value = parseSize(name, raw, newRules).toString();
    }
    values.delete(name);
    values.set(name, value);
  }
  return values;
}
