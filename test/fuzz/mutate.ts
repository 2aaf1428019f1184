// Structure-aware mutations of a seed image: header fields set to boundary values, table entries
// pointed at interesting offsets, bit flips inside structures, truncation, growth and splices.
import type { Rng } from './prng.ts';
import type { Field, Seed, Span } from './seeds.ts';

/** Values that break size and offset arithmetic, relative to the image's own size. */
function interesting(rng: Rng, width: number, fileSize: number): bigint {
  const max = (1n << BigInt(width * 8)) - 1n;
  const candidates: bigint[] = [
    0n, 1n, 2n, 7n, 8n, 9n, 63n, 64n, 511n, 512n, 513n, 4095n, 4096n, 65535n, 65536n, 0x7fffn, 0x8000n,
    0x7fffffffn, 0x80000000n, 0xffffffffn, 0x100000000n, 1n << 40n, 1n << 52n, 1n << 53n, (1n << 62n) - 1n, 1n << 62n, 1n << 63n, max, max - 1n,
    BigInt(fileSize), BigInt(fileSize) - 1n, BigInt(fileSize) + 1n, BigInt(fileSize) + 512n, BigInt(fileSize) * 2n,
    BigInt(rng.next()), (BigInt(rng.next()) << 32n) | BigInt(rng.next()),
  ];
  return BigInt.asUintN(width * 8, rng.pick(candidates));
}

function write(b: Buffer, at: number, width: number, be: boolean, value: bigint): void {
  if (at < 0 || at + width > b.length) return;
  if (width === 1) b[at] = Number(value & 0xffn);
  else if (width === 2 && be) b.writeUInt16BE(Number(value & 0xffffn), at);
  else if (width === 2) b.writeUInt16LE(Number(value & 0xffffn), at);
  else if (width === 4 && be) b.writeUInt32BE(Number(value & 0xffffffffn), at);
  else if (width === 4) b.writeUInt32LE(Number(value & 0xffffffffn), at);
  else if (be) b.writeBigUInt64BE(value, at);
  else b.writeBigUInt64LE(value, at);
}

function read(b: Buffer, at: number, width: number, be: boolean): bigint {
  if (at < 0 || at + width > b.length) return 0n;
  if (width === 1) return BigInt(b[at]);
  if (width === 2) return BigInt(be ? b.readUInt16BE(at) : b.readUInt16LE(at));
  if (width === 4) return BigInt(be ? b.readUInt32BE(at) : b.readUInt32LE(at));
  return be ? b.readBigUInt64BE(at) : b.readBigUInt64LE(at);
}

type Mutator = (b: Buffer, seed: Seed, rng: Rng) => Buffer;

const setField: Mutator = (b, seed, rng) => {
  if (seed.fields.length === 0) return b;
  const f: Field = rng.pick(seed.fields);
  write(b, f.at, f.width, f.be, interesting(rng, f.width, b.length));
  return b;
};

const nudgeField: Mutator = (b, seed, rng) => {
  if (seed.fields.length === 0) return b;
  const f: Field = rng.pick(seed.fields);
  const delta = BigInt(rng.pick([-512, -8, -1, 1, 8, 512, 4096]));
  write(b, f.at, f.width, f.be, BigInt.asUintN(f.width * 8, read(b, f.at, f.width, f.be) + delta));
  return b;
};

function entryIn(span: Span, rng: Rng, b: Buffer): number {
  const count = Math.max(1, Math.floor(Math.min(span.length, b.length - span.at) / span.entry));
  return span.at + rng.below(count) * span.entry;
}

const setEntry: Mutator = (b, seed, rng) => {
  if (seed.spans.length === 0) return b;
  const span = rng.pick(seed.spans);
  if (span.at >= b.length) return b;
  const at = entryIn(span, rng, b);
  const width = span.entry === 1 ? rng.pick([1, 4, 8] as const) : span.entry;
  // Keep the entry's flag bits half of the time: an L2 entry still "allocated", but elsewhere.
  const old = read(b, at, width, span.be);
  const fresh = interesting(rng, width, b.length);
  write(b, at, width, span.be, rng.chance(0.5) && width === 8 ? (old & 0xc000000000000000n) | (fresh & 0x00fffffffffffe00n) : fresh);
  return b;
};

const flipBits: Mutator = (b, seed, rng) => {
  const inSpan = seed.spans.length > 0 && rng.chance(0.5);
  const span = inSpan ? rng.pick(seed.spans) : { at: 0, length: Math.min(b.length, 4096) };
  if (span.at >= b.length) return b;
  for (let n = 1 + rng.below(4); n > 0; n--) {
    const at = span.at + rng.below(Math.min(span.length, b.length - span.at));
    b[at] ^= 1 << rng.below(8);
  }
  return b;
};

const truncate: Mutator = (b, _seed, rng) => {
  const cut = rng.chance(0.5) ? rng.below(Math.min(b.length, 1024 * 1024)) : rng.below(b.length);
  return b.subarray(0, cut);
};

const grow: Mutator = (b, _seed, rng) => Buffer.concat([b, Buffer.alloc(rng.pick([1, 511, 512, 4096, 65536]), rng.chance(0.5) ? 0 : 0xff)]);

const splice: Mutator = (b, seed, rng) => {
  if (b.length < 16) return b;
  const length = Math.min(rng.pick([8, 64, 512, 4096]), b.length);
  const from = seed.spans.length > 0 && rng.chance(0.5) ? Math.min(rng.pick(seed.spans).at, b.length - length) : rng.below(b.length - length);
  const to = rng.below(b.length - length);
  b.copy(b, to, from, from + length);
  return b;
};

/** Text seeds (VMDK descriptors): a decimal number replaced by an interesting one, or a quoted
 *  name by another, so that the parser's numbers and file names get hostile values. */
const setToken: Mutator = (b, _seed, rng) => {
  const text = b.toString('latin1');
  const tokens = [...text.matchAll(/"[^"\n]*"|\b\d+\b/g)];
  if (tokens.length === 0) return b;
  const t = rng.pick(tokens);
  const fresh = t[0].startsWith('"')
    ? `"${rng.pick(['', 'img', 'img-flat', '../img-flat', '/etc/passwd', 'x'.repeat(300), 'img\u0000flat', 'img-flat" 0'])}"`
    : rng.pick([interesting(rng, 8, b.length).toString(), `-${rng.below(1000)}`, String(2 ** 64), `0x${rng.below(65536).toString(16)}`]);
  return Buffer.from(text.slice(0, t.index) + fresh + text.slice(t.index! + t[0].length), 'latin1');
};

const MUTATORS: [Mutator, number][] = [[setField, 30], [nudgeField, 10], [setEntry, 25], [flipBits, 20], [truncate, 5], [grow, 3], [splice, 7]];
const TEXT_MUTATORS: [Mutator, number][] = [[setToken, 60], [flipBits, 20], [truncate, 5], [splice, 15]];

/** One mutant: 1–4 mutations of a copy of the seed, then (mostly) its checksums fixed up. */
export function mutate(seed: Seed, rng: Rng): Buffer {
  let b: Buffer = Buffer.from(seed.bytes);
  const table = seed.text ? TEXT_MUTATORS : MUTATORS;
  const total = table.reduce((n, [, w]) => n + w, 0);
  for (let n = 1 + rng.below(4); n > 0; n--) {
    let pick = rng.below(total);
    const m = table.find(([, w]) => (pick -= w) < 0)![0];
    b = m(b, seed, rng);
  }
  if (seed.fixup && rng.chance(0.8)) seed.fixup(b);
  return b;
}
