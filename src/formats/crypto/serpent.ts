// Serpent (Anderson, Biham, Knudsen, "Serpent: A Proposal for the AES", 1998), written from the
// paper's bitslice description: 32 rounds of key mixing, one of eight 4-bit S-boxes applied to
// the four 32-bit words bit-column by bit-column (word 0 carrying the least significant bit), and
// the linear transformation; 33 round keys from the prekey recurrence with the golden ratio.
// Short keys are padded with a single 1 bit. Byte order as the NESSIE vectors and nettle (qemu):
// byte 0 of a block or key is the least significant byte of word 0.
//
// S-boxes act on four bit-columns at a time through 65 536-entry tables built lazily from the
// 4-bit boxes: plain table lookups, no secret-dependent branches.

const SBOX = [
  [3, 8, 15, 1, 10, 6, 5, 11, 14, 13, 4, 2, 7, 0, 9, 12],
  [15, 12, 2, 7, 9, 0, 5, 10, 1, 11, 14, 8, 6, 13, 3, 4],
  [8, 6, 7, 9, 3, 12, 10, 15, 13, 1, 14, 4, 0, 11, 5, 2],
  [0, 15, 11, 8, 12, 9, 6, 3, 13, 1, 2, 4, 10, 7, 5, 14],
  [1, 15, 8, 3, 12, 0, 11, 6, 2, 5, 4, 10, 9, 14, 7, 13],
  [15, 5, 2, 11, 4, 10, 9, 12, 0, 3, 14, 8, 13, 6, 7, 1],
  [7, 2, 12, 5, 8, 4, 6, 11, 14, 9, 1, 15, 13, 3, 10, 0],
  [1, 13, 15, 0, 14, 8, 2, 11, 7, 4, 12, 10, 9, 3, 5, 6],
];
const INVERSE = SBOX.map((s) => {
  const inv = new Array<number>(16);
  s.forEach((v, i) => (inv[v] = i));
  return inv;
});
const PHI = 0x9e3779b9;

/**
 * For S-box `s`: input index = four bits of word 0 | four of word 1 << 4 | word 2 << 8 | word 3 << 12
 * (the same four bit positions of each word); output packed the same way.
 */
function wideTable(s: number[]): Uint16Array {
  const t = new Uint16Array(65536);
  for (let idx = 0; idx < 65536; idx++) {
    let out = 0;
    for (let bit = 0; bit < 4; bit++) {
      const nibble = ((idx >>> bit) & 1) | (((idx >>> (4 + bit)) & 1) << 1) | (((idx >>> (8 + bit)) & 1) << 2) | (((idx >>> (12 + bit)) & 1) << 3);
      const v = s[nibble];
      out |= ((v & 1) << bit) | (((v >>> 1) & 1) << (4 + bit)) | (((v >>> 2) & 1) << (8 + bit)) | (((v >>> 3) & 1) << (12 + bit));
    }
    t[idx] = out;
  }
  return t;
}

const tables: (Uint16Array | undefined)[] = new Array(16);
function table(i: number): Uint16Array {
  return (tables[i] ??= wideTable(i < 8 ? SBOX[i] : INVERSE[i - 8]));
}

/** Applies a wide table to the four words in `x` (in place). */
function substitute(t: Uint16Array, x: Uint32Array, at = 0): void {
  let y0 = 0, y1 = 0, y2 = 0, y3 = 0;
  for (let shift = 0; shift < 32; shift += 4) {
    const v = t[((x[at] >>> shift) & 0xf) | (((x[at + 1] >>> shift) & 0xf) << 4) | (((x[at + 2] >>> shift) & 0xf) << 8) | (((x[at + 3] >>> shift) & 0xf) << 12)];
    y0 |= (v & 0xf) << shift;
    y1 |= ((v >>> 4) & 0xf) << shift;
    y2 |= ((v >>> 8) & 0xf) << shift;
    y3 |= ((v >>> 12) & 0xf) << shift;
  }
  x[at] = y0; x[at + 1] = y1; x[at + 2] = y2; x[at + 3] = y3;
}

const rol = (v: number, n: number): number => (v << n) | (v >>> (32 - n));
const ror = (v: number, n: number): number => (v >>> n) | (v << (32 - n));

function linear(x: Uint32Array): void {
  let x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
  x0 = rol(x0, 13);
  x2 = rol(x2, 3);
  x1 = x1 ^ x0 ^ x2;
  x3 = x3 ^ x2 ^ (x0 << 3);
  x1 = rol(x1, 1);
  x3 = rol(x3, 7);
  x0 = x0 ^ x1 ^ x3;
  x2 = x2 ^ x3 ^ (x1 << 7);
  x0 = rol(x0, 5);
  x2 = rol(x2, 22);
  x[0] = x0; x[1] = x1; x[2] = x2; x[3] = x3;
}

function inverseLinear(x: Uint32Array): void {
  let x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
  x2 = ror(x2, 22);
  x0 = ror(x0, 5);
  x2 = x2 ^ x3 ^ (x1 << 7);
  x0 = x0 ^ x1 ^ x3;
  x3 = ror(x3, 7);
  x1 = ror(x1, 1);
  x3 = x3 ^ x2 ^ (x0 << 3);
  x1 = x1 ^ x0 ^ x2;
  x2 = ror(x2, 3);
  x0 = ror(x0, 13);
  x[0] = x0; x[1] = x1; x[2] = x2; x[3] = x3;
}

export class Serpent {
  /** 33 round keys of four words. */
  private readonly k = new Uint32Array(132);

  constructor(key: Uint8Array) {
    if (key.length < 1 || key.length > 32) throw new Error(`Serpent key of ${key.length} bytes`);
    const padded = new Uint8Array(32);
    padded.set(key);
    if (key.length < 32) padded[key.length] = 1;
    const w = new Int32Array(140);
    for (let i = 0; i < 8; i++) w[i] = padded[4 * i] | (padded[4 * i + 1] << 8) | (padded[4 * i + 2] << 16) | (padded[4 * i + 3] << 24);
    for (let i = 8; i < 140; i++) w[i] = rol(w[i - 8] ^ w[i - 5] ^ w[i - 3] ^ w[i - 1] ^ PHI ^ (i - 8), 11);
    for (let i = 0; i < 33; i++) {
      for (let j = 0; j < 4; j++) this.k[4 * i + j] = w[8 + 4 * i + j];
      substitute(table((3 - i + 32) % 8), this.k, 4 * i);
    }
  }

  /** Encrypts or decrypts whole 16-byte blocks of `data` into `out` (ECB). */
  ecb(data: Uint8Array, out: Uint8Array, encrypt: boolean): void {
    const dv = new DataView(data.buffer, data.byteOffset, data.length);
    const ov = new DataView(out.buffer, out.byteOffset, out.length);
    const x = new Uint32Array(4);
    const k = this.k;
    const mix = (round: number) => {
      for (let j = 0; j < 4; j++) x[j] ^= k[4 * round + j];
    };
    for (let at = 0; at + 16 <= data.length; at += 16) {
      for (let j = 0; j < 4; j++) x[j] = dv.getUint32(at + 4 * j, true);
      if (encrypt) {
        for (let r = 0; r < 32; r++) {
          mix(r);
          substitute(table(r % 8), x);
          if (r < 31) linear(x);
        }
        mix(32);
      } else {
        mix(32);
        for (let r = 31; r >= 0; r--) {
          if (r < 31) inverseLinear(x);
          substitute(table(8 + (r % 8)), x);
          mix(r);
        }
      }
      for (let j = 0; j < 4; j++) ov.setUint32(at + 4 * j, x[j], true);
    }
  }
}
