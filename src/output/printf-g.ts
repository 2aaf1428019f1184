// C's "%.Pg" for doubles, exactly as glibc prints it. JavaScript's toPrecision rounds ties away
// from zero and switches to exponent form at other thresholds; glibc rounds the exact binary value
// half-to-even (1152 bytes = 1.125 KiB prints as "1.12 KiB"). Every finite double is m * 2^e, so
// the exact decimal digits come from BigInt arithmetic.

/** The double as an exact fraction num / den (den a power of two), num >= 0. */
function exactFraction(x: number): { num: bigint; den: bigint } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const biased = (hi >>> 20) & 0x7ff;
  let mantissa = (BigInt(hi & 0xfffff) * 0x100000000n) + BigInt(lo);
  let exp: number;
  if (biased === 0) {
    exp = -1074; // subnormal
  } else {
    mantissa += 0x10000000000000n;
    exp = biased - 1075;
  }
  return exp >= 0 ? { num: mantissa * 2n ** BigInt(exp), den: 1n } : { num: mantissa, den: 2n ** BigInt(-exp) };
}

/** Integer part of num / den rounded half-to-even (the default IEEE rounding glibc uses). */
function roundHalfEven(num: bigint, den: bigint): bigint {
  const q = num / den;
  const twice = (num % den) * 2n;
  if (twice > den || (twice === den && q % 2n === 1n)) return q + 1n;
  return q;
}

/** The P significant digits of |x| and the decimal exponent of the first one. */
function significantDigits(x: number, precision: number): { digits: string; exponent: number } {
  const { num, den } = exactFraction(Math.abs(x));
  let exponent = Math.floor(Math.log10(Math.abs(x)));
  // log10 can be off by one near powers of ten: fix it against the exact value.
  const pow10 = (n: number) => 10n ** BigInt(n);
  const atLeast = (e: number) => (e >= 0 ? num >= pow10(e) * den : num * pow10(-e) >= den);
  while (!atLeast(exponent)) exponent--;
  while (atLeast(exponent + 1)) exponent++;
  const shift = precision - 1 - exponent;
  let scaled = shift >= 0 ? roundHalfEven(num * pow10(shift), den) : roundHalfEven(num, den * pow10(-shift));
  if (scaled === pow10(precision)) {
    scaled = pow10(precision - 1);
    exponent++;
  }
  return { digits: scaled.toString(), exponent };
}

function stripZeros(s: string): string {
  return s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
}

/** printf("%.<precision>g", x) as glibc prints it (no '#' flag, no width). */
export function formatG(x: number, precision = 6): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const p = precision === 0 ? 1 : precision;
  const sign = x < 0 || Object.is(x, -0) ? '-' : '';
  if (x === 0) return `${sign}0`;
  const { digits, exponent } = significantDigits(x, p);
  if (exponent < -4 || exponent >= p) {
    const mantissa = stripZeros(digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits);
    const expDigits = String(Math.abs(exponent)).padStart(2, '0');
    return `${sign}${mantissa}e${exponent < 0 ? '-' : '+'}${expDigits}`;
  }
  let fixed: string;
  if (exponent >= 0) {
    fixed = `${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
  } else {
    fixed = `0.${'0'.repeat(-exponent - 1)}${digits}`;
  }
  return sign + stripZeros(fixed);
}
