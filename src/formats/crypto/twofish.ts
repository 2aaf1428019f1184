// Twofish (Schneier et al., "Twofish: A 128-Bit Block Cipher", 1998), written from the paper's
// definitions: the q0/q1 byte permutations built from their 4-bit tables (section 4.3.5), the
// MDS matrix over GF(2^8) mod x^8+x^6+x^5+x^3+1, the RS matrix mod x^8+x^6+x^3+x^2+1, the h
// function and the key schedule (4.3), 16 rounds of the F function with 1-bit rotations (4.1).
// Key-dependent S-boxes are folded with the MDS matrix into four 256-entry tables at key setup.
// Words are little-endian (byte 0 is the least significant), as in the paper and in qemu's nettle.

const Q_TABLES = [
  // q0: t0..t3
  [[0x8, 0x1, 0x7, 0xd, 0x6, 0xf, 0x3, 0x2, 0x0, 0xb, 0x5, 0x9, 0xe, 0xc, 0xa, 0x4],
    [0xe, 0xc, 0xb, 0x8, 0x1, 0x2, 0x3, 0x5, 0xf, 0x4, 0xa, 0x6, 0x7, 0x0, 0x9, 0xd],
    [0xb, 0xa, 0x5, 0xe, 0x6, 0xd, 0x9, 0x0, 0xc, 0x8, 0xf, 0x3, 0x2, 0x4, 0x7, 0x1],
    [0xd, 0x7, 0xf, 0x4, 0x1, 0x2, 0x6, 0xe, 0x9, 0xb, 0x3, 0x0, 0x8, 0x5, 0xc, 0xa]],
  // q1: t0..t3
  [[0x2, 0x8, 0xb, 0xd, 0xf, 0x7, 0x6, 0xe, 0x3, 0x1, 0x9, 0x4, 0x0, 0xa, 0xc, 0x5],
    [0x1, 0xe, 0x2, 0xb, 0x4, 0xc, 0x3, 0x7, 0x6, 0xd, 0xa, 0x5, 0xf, 0x9, 0x0, 0x8],
    [0x4, 0xc, 0x7, 0x5, 0x1, 0x6, 0x9, 0xa, 0x0, 0xe, 0xd, 0x8, 0x2, 0xb, 0x3, 0xf],
    [0xb, 0x9, 0x5, 0x1, 0xc, 0x3, 0xd, 0xe, 0x6, 0x4, 0x7, 0xf, 0x2, 0x0, 0x8, 0xa]],
];

const ror4 = (x: number, n: number): number => ((x >>> n) | (x << (4 - n))) & 0xf;

/** One q permutation on a byte, straight from its definition. */
function qByte(t: number[][], x: number): number {
  let a = x >>> 4, b = x & 0xf;
  [a, b] = [a ^ b, (a ^ ror4(b, 1) ^ (8 * a)) & 0xf];
  [a, b] = [t[0][a], t[1][b]];
  [a, b] = [a ^ b, (a ^ ror4(b, 1) ^ (8 * a)) & 0xf];
  [a, b] = [t[2][a], t[3][b]];
  return (b << 4) | a;
}

// The q permutations and MDS columns are built on first use: every sandboxed op starts a guest
// that bundles this file, and only Twofish users should pay for the tables.
let q0: Uint8Array, q1: Uint8Array;

/** Multiplication in GF(2^8) modulo `poly` (x^8 included). */
function gfMul(a: number, b: number, poly: number): number {
  let r = 0;
  for (; b > 0; b >>>= 1) {
    if (b & 1) r ^= a;
    a <<= 1;
    if (a & 0x100) a ^= poly;
  }
  return r;
}

const MDS = [[0x01, 0xef, 0x5b, 0x5b], [0x5b, 0xef, 0xef, 0x01], [0xef, 0x5b, 0x01, 0xef], [0xef, 0x01, 0xef, 0x5b]];
const MDS_POLY = 0x169;
const RS = [
  [0x01, 0xa4, 0x55, 0x87, 0x5a, 0x58, 0xdb, 0x9e],
  [0xa4, 0x56, 0x82, 0xf3, 0x1e, 0xc6, 0x68, 0xe5],
  [0x02, 0xa1, 0xfc, 0xc1, 0x47, 0xae, 0x3d, 0x19],
  [0xa4, 0x55, 0x87, 0x5a, 0x58, 0xdb, 0x9e, 0x03],
];
const RS_POLY = 0x14d;

/** MDS column j times byte y, as a little-endian word: the contribution of input byte j. */
let MDS_COLUMN: Uint32Array[];

function buildTables(): void {
  if (MDS_COLUMN) return;
  [q0, q1] = Q_TABLES.map((t) => Uint8Array.from({ length: 256 }, (_, x) => qByte(t, x)));
  MDS_COLUMN = [0, 1, 2, 3].map((j) => Uint32Array.from({ length: 256 }, (_, y) =>
    (gfMul(MDS[0][j], y, MDS_POLY) | (gfMul(MDS[1][j], y, MDS_POLY) << 8) | (gfMul(MDS[2][j], y, MDS_POLY) << 16) | (gfMul(MDS[3][j], y, MDS_POLY) << 24)) >>> 0));
}

const rol = (x: number, n: number): number => ((x << n) | (x >>> (32 - n))) >>> 0;
const byte = (w: number, i: number): number => (w >>> (8 * i)) & 0xff;

/** The q chain of h for input byte position j and key words L (before the MDS step). */
function hBytes(x: number, L: number[]): number[] {
  const y = [byte(x, 0), byte(x, 1), byte(x, 2), byte(x, 3)];
  const k = L.length;
  if (k === 4) {
    y[0] = q1[y[0]] ^ byte(L[3], 0); y[1] = q0[y[1]] ^ byte(L[3], 1); y[2] = q0[y[2]] ^ byte(L[3], 2); y[3] = q1[y[3]] ^ byte(L[3], 3);
  }
  if (k >= 3) {
    y[0] = q1[y[0]] ^ byte(L[2], 0); y[1] = q1[y[1]] ^ byte(L[2], 1); y[2] = q0[y[2]] ^ byte(L[2], 2); y[3] = q0[y[3]] ^ byte(L[2], 3);
  }
  return [
    q1[q0[q0[y[0]] ^ byte(L[1], 0)] ^ byte(L[0], 0)],
    q0[q0[q1[y[1]] ^ byte(L[1], 1)] ^ byte(L[0], 1)],
    q1[q1[q0[y[2]] ^ byte(L[1], 2)] ^ byte(L[0], 2)],
    q0[q1[q1[y[3]] ^ byte(L[1], 3)] ^ byte(L[0], 3)],
  ];
}

function h(x: number, L: number[]): number {
  const y = hBytes(x, L);
  return (MDS_COLUMN[0][y[0]] ^ MDS_COLUMN[1][y[1]] ^ MDS_COLUMN[2][y[2]] ^ MDS_COLUMN[3][y[3]]) >>> 0;
}

export class Twofish {
  private readonly k = new Uint32Array(40);
  /** g(X) = s0[x0] ^ s1[x1] ^ s2[x2] ^ s3[x3]: key-dependent S-boxes folded with the MDS matrix. */
  private readonly s: Uint32Array[];

  constructor(key: Uint8Array) {
    if (key.length !== 16 && key.length !== 24 && key.length !== 32) throw new Error(`Twofish key of ${key.length} bytes`);
    buildTables();
    const n = key.length / 8;
    const m = Array.from({ length: 2 * n }, (_, i) => (key[4 * i] | (key[4 * i + 1] << 8) | (key[4 * i + 2] << 16) | (key[4 * i + 3] << 24)) >>> 0);
    const me = m.filter((_, i) => i % 2 === 0);
    const mo = m.filter((_, i) => i % 2 === 1);
    // S vector: RS times each 8-byte group of the key; used in reverse order by g.
    const sWords: number[] = [];
    for (let i = 0; i < n; i++) {
      let w = 0;
      for (let r = 0; r < 4; r++) {
        let acc = 0;
        for (let c = 0; c < 8; c++) acc ^= gfMul(RS[r][c], key[8 * i + c], RS_POLY);
        w |= acc << (8 * r);
      }
      sWords.push(w >>> 0);
    }
    const sList = sWords.reverse();
    const rho = 0x01010101;
    for (let i = 0; i < 20; i++) {
      const a = h(Math.imul(2 * i, rho) >>> 0, me);
      const b = rol(h(Math.imul(2 * i + 1, rho) >>> 0, mo), 8);
      this.k[2 * i] = (a + b) >>> 0;
      this.k[2 * i + 1] = rol((a + 2 * b) >>> 0, 9);
    }
    this.s = [0, 1, 2, 3].map(() => new Uint32Array(256));
    for (let x = 0; x < 256; x++) {
      const y = hBytes((x | (x << 8) | (x << 16) | (x << 24)) >>> 0, sList);
      for (let j = 0; j < 4; j++) this.s[j][x] = MDS_COLUMN[j][y[j]];
    }
  }

  private g(x: number): number {
    const s = this.s;
    return (s[0][x & 0xff] ^ s[1][(x >>> 8) & 0xff] ^ s[2][(x >>> 16) & 0xff] ^ s[3][x >>> 24]) >>> 0;
  }

  /** Encrypts or decrypts whole 16-byte blocks of `data` into `out` (ECB). */
  ecb(data: Uint8Array, out: Uint8Array, encrypt: boolean): void {
    const dv = new DataView(data.buffer, data.byteOffset, data.length);
    const ov = new DataView(out.buffer, out.byteOffset, out.length);
    const k = this.k;
    for (let at = 0; at + 16 <= data.length; at += 16) {
      const inW = encrypt ? 0 : 4;
      const outW = encrypt ? 4 : 0;
      let r0 = dv.getUint32(at, true) ^ k[inW], r1 = dv.getUint32(at + 4, true) ^ k[inW + 1];
      let r2 = dv.getUint32(at + 8, true) ^ k[inW + 2], r3 = dv.getUint32(at + 12, true) ^ k[inW + 3];
      for (let round = 0; round < 16; round++) {
        const rk = encrypt ? round : 15 - round;
        const t0 = this.g(r0);
        const t1 = this.g(rol(r1 >>> 0, 8));
        const f0 = (t0 + t1 + k[2 * rk + 8]) >>> 0;
        const f1 = (t0 + 2 * t1 + k[2 * rk + 9]) >>> 0;
        let n2: number, n3: number;
        if (encrypt) {
          n2 = rol((r2 ^ f0) >>> 0, 31);
          n3 = (rol(r3 >>> 0, 1) ^ f1) >>> 0;
        } else {
          n2 = (rol(r2 >>> 0, 1) ^ f0) >>> 0;
          n3 = rol((r3 ^ f1) >>> 0, 31);
        }
        [r0, r1, r2, r3] = [n2, n3, r0, r1];
      }
      // Undo the last swap, then output whitening.
      ov.setUint32(at, (r2 ^ k[outW]) >>> 0, true);
      ov.setUint32(at + 4, (r3 ^ k[outW + 1]) >>> 0, true);
      ov.setUint32(at + 8, (r0 ^ k[outW + 2]) >>> 0, true);
      ov.setUint32(at + 12, (r1 ^ k[outW + 3]) >>> 0, true);
    }
  }
}
