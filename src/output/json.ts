// qemu's pretty JSON writer (qobject/json-writer.c): four spaces per level, `"key": value`, an
// empty container still opens, breaks the line and closes at its own indentation, and strings are
// escaped to pure ASCII (\uXXXX for control characters and everything beyond 0x7E).
import { formatNumber, isQDict, qdictEntries, type QValue } from './qobject.ts';

const SIMPLE_ESCAPES: Record<number, string> = {
  0x22: '\\"',
  0x5c: '\\\\',
  0x08: '\\b',
  0x0c: '\\f',
  0x0a: '\\n',
  0x0d: '\\r',
  0x09: '\\t',
};

/** Code points qemu's mod_utf8_codepoint refuses; they print as U+FFFD. */
function isRefusedCodePoint(cp: number): boolean {
  return (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe || (cp >= 0xd800 && cp <= 0xdfff);
}

const hex4 = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');

/** A JSON string literal as qemu writes it. */
export function quoteJsonString(s: string): string {
  let out = '"';
  for (const ch of s) {
    let cp = ch.codePointAt(0) as number;
    const simple = SIMPLE_ESCAPES[cp];
    if (simple) {
      out += simple;
      continue;
    }
    if (isRefusedCodePoint(cp)) cp = 0xfffd; // lone surrogates and noncharacters
    if (cp > 0xffff) {
      const v = cp - 0x10000;
      out += `\\u${hex4(0xd800 + Math.floor(v / 0x400))}\\u${hex4(0xdc00 + (v % 0x400))}`;
    } else if (cp < 0x20 || cp >= 0x7f) {
      out += `\\u${hex4(cp)}`;
    } else {
      out += String.fromCharCode(cp);
    }
  }
  return out + '"';
}

function write(value: QValue, depth: number, parts: string[]): void {
  const pad = (d: number) => '\n' + '    '.repeat(d);
  if (Array.isArray(value) || isQDict(value)) {
    const isList = Array.isArray(value);
    parts.push(isList ? '[' : '{');
    const items: [string | null, QValue][] = isList ? value.map((v) => [null, v]) : qdictEntries(value);
    items.forEach(([key, item], i) => {
      parts.push(i > 0 ? ',' : '', pad(depth + 1));
      if (key !== null) parts.push(quoteJsonString(key), ': ');
      write(item, depth + 1, parts);
    });
    parts.push(pad(depth), isList ? ']' : '}');
    return;
  }
  if (value === null) parts.push('null');
  else if (typeof value === 'string') parts.push(quoteJsonString(value));
  else if (typeof value === 'boolean') parts.push(value ? 'true' : 'false');
  else parts.push(formatNumber(value));
}

/** qobject_to_json_pretty(value), without the newline qemu-img adds after it. */
export function toQemuJson(value: QValue): string {
  const parts: string[] = [];
  write(value, 0, parts);
  return parts.join('');
}
