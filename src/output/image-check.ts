// What `qemu-img check` prints: the human summary (qemu-img.c dump_human_image_check), the JSON
// ImageCheck object, and the checker's stderr lines expanded from their compact runs.
import type { CheckCounts, CheckLine } from '../formats/check-types.ts';
import { toQemuJson } from './json.ts';
import { escapeForTerminal } from './terminal.ts';

/** printf("%0.2f") of a double: its exact binary value, ties to even. */
export function printf2f(x: number): string {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const exp = Number((bits >> 52n) & 0x7ffn);
  const frac = bits & ((1n << 52n) - 1n);
  // x = mantissa * 2^power exactly (x is a non-negative, finite percentage here).
  const mantissa = exp === 0 ? frac : frac | (1n << 52n);
  const power = (exp === 0 ? 1 : exp) - 1075;
  let hundredths: bigint;
  if (power >= 0) hundredths = mantissa * 100n << BigInt(power);
  else {
    const den = 1n << BigInt(-power);
    const num = mantissa * 100n;
    hundredths = num / den;
    const twice = (num % den) * 2n;
    if (twice > den || (twice === den && hundredths % 2n === 1n)) hundredths++;
  }
  const s = hundredths.toString().padStart(3, '0');
  return `${s.slice(0, -2)}.${s.slice(-2)}`;
}

export function humanCheck(c: CheckCounts): string {
  let out = '';
  if (c['corruptions-fixed'] || c['leaks-fixed']) {
    out += `The following inconsistencies were found and repaired:\n\n    ${c['leaks-fixed']} leaked clusters\n    ${c['corruptions-fixed']} corruptions\n\nDouble checking the fixed image now...\n`;
  }
  if (!(c.corruptions || c.leaks || c['check-errors'])) out += 'No errors were found on the image.\n';
  else {
    if (c.corruptions) out += `\n${c.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    if (c.leaks) out += `\n${c.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    if (c['check-errors']) out += `\n${c['check-errors']} internal errors have occurred during the check.\n`;
  }
  const total = c['total-clusters'];
  const allocated = c['allocated-clusters'];
  if (total !== 0 && allocated !== 0) {
    out += `${allocated}/${total} = ${printf2f((allocated * 100) / total)}% allocated, ` +
      `${printf2f((c['fragmented-clusters'] * 100) / allocated)}% fragmented, ${printf2f((c['compressed-clusters'] * 100) / allocated)}% compressed clusters\n`;
  }
  if (c['image-end-offset']) out += `Image end offset: ${c['image-end-offset']}\n`;
  return out;
}

/** The QAPI ImageCheck object: optional counters only when non-zero. */
export function jsonCheck(filename: string, format: string, c: CheckCounts): string {
  const opt = (v: number) => (v !== 0 ? v : undefined);
  return toQemuJson({
    filename,
    format,
    'check-errors': c['check-errors'],
    'image-end-offset': opt(c['image-end-offset']),
    corruptions: opt(c.corruptions),
    leaks: opt(c.leaks),
    'corruptions-fixed': opt(c['corruptions-fixed']),
    'leaks-fixed': opt(c['leaks-fixed']),
    'total-clusters': opt(c['total-clusters']),
    'allocated-clusters': opt(c['allocated-clusters']),
    'fragmented-clusters': opt(c['fragmented-clusters']),
    'compressed-clusters': opt(c['compressed-clusters']),
  }) + '\n';
}

/** Writes a checker's stderr lines; runs of refcount mismatches become one line per cluster. */
export function writeCheckLines(lines: readonly CheckLine[], err: (text: string) => void, progname: string): void {
  for (const line of lines) {
    if (typeof line === 'string') {
      err(escapeForTerminal(line) + '\n');
      continue;
    }
    if (line[0] === 2) {
      err(`${progname}: ${escapeForTerminal(line[1])}\n`);
      continue;
    }
    const [kind, first, count, refcount, reference] = line;
    const word = kind === 1 ? 'ERROR' : kind === 3 ? 'Repairing' : 'Leaked';
    // Bounded chunks: a run can cover millions of clusters.
    let chunk = '';
    for (let i = 0; i < count; i++) {
      chunk += `${word} cluster ${first + i} refcount=${refcount} reference=${reference}\n`;
      if (chunk.length > 65536) {
        err(chunk);
        chunk = '';
      }
    }
    if (chunk) err(chunk);
  }
}
