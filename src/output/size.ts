import { formatG } from './printf-g.ts';

const SUFFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/** The binary exponent frexp() returns: x = m * 2^e with 0.5 <= m < 1 (0 for x = 0). */
function frexpExponent(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return 0;
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const biased = (view.getUint16(0) >>> 4) & 0x7ff;
  if (biased === 0) return frexpExponent(x * 2 ** 64) - 64;
  return biased - 1022;
}

/**
 * qemu's size_to_str (util/cutils.c): three significant digits and a binary unit, switching to the
 * next unit once the number would reach 1000 ("1000 KiB" prints as "0.977 MiB").
 */
export function sizeToStr(bytes: number | bigint): string {
  const value = Number(bytes); // uint64 -> double, as the C code converts it
  let unit = Math.trunc((frexpExponent(value / (1000 / 1024)) - 1) / 10);
  if (unit < 0) unit = 0; // C's integer division truncates toward zero, as trunc does
  if (unit >= SUFFIXES.length) unit = SUFFIXES.length - 1;
  const divisor = 2 ** (unit * 10);
  return `${formatG(value / divisor, 3)} ${SUFFIXES[unit]}B`;
}
