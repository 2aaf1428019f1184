// Compressed clusters at the edges of qemu's rules: over-long, short, truncated, multi-frame and
// trailing-junk streams (zlib and zstd), hand-built at test time into a crafted qcow2. instar's
// convert (sandboxed, and in-process) must succeed or fail as both oracles do, with the same
// message and the same bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { oracle, runInstar, runQemu, VERSIONS } from '../../helpers/oracles.ts';
import { qcow2, zlibBomb, zstdBomb } from '../../adversarial/craft/qcow2.ts';

const K = 1024;
const CLUSTER = 64 * K;

/** Seeded bytes that compress somewhat (so streams have real Huffman blocks). */
function content(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = 0x61 + ((x >>> 16) % 7);
  }
  return b;
}

/** A zstd frame of raw blocks (≤ 32 KiB each); window 128 KiB unless `windowLog` is given. */
function zstdFrame(data: Buffer, opts: { contentSize?: boolean; windowLog?: number } = {}): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4);
  head.writeUInt32LE(0xfd2fb528);
  parts.push(head);
  if (opts.contentSize) {
    const h = Buffer.alloc(5);
    h[0] = 0xa0; // single segment, 4-byte content size
    h.writeUInt32LE(data.length, 1);
    parts.push(h);
  } else {
    parts.push(Buffer.from([0x00, ((opts.windowLog ?? 17) - 10) << 3]));
  }
  for (let at = 0; at < data.length || at === 0; at += 32 * K) {
    const piece = data.subarray(at, at + 32 * K);
    const last = at + 32 * K >= data.length ? 1 : 0;
    const bh = Buffer.alloc(3);
    bh.writeUIntLE(last | (piece.length << 3), 0, 3); // type 0: raw
    parts.push(bh, piece);
    if (data.length === 0) break;
  }
  return Buffer.concat(parts);
}

const skippable = (n: number): Buffer => {
  const b = Buffer.alloc(8 + n, 0x5a);
  b.writeUInt32LE(0x184d2a53, 0);
  b.writeUInt32LE(n, 4);
  return b;
};

const deflate = (b: Buffer): Buffer => deflateRawSync(b, { windowBits: 12 });
const A = content(CLUSTER, 1);
const B = content(CLUSTER / 2, 2);
const C = content(CLUSTER / 2, 3);

const cases: [string, 0 | 1, Buffer][] = [
  ['zlib: one cluster exactly', 0, deflate(A)],
  ['zlib: trailing junk after the stream', 0, Buffer.concat([deflate(A), Buffer.alloc(700, 0xff)])],
  ['zlib: a bomb reads as its first cluster', 0, zlibBomb(64 * 1024 * 1024)],
  ['zlib: an over-long stream of real data', 0, deflate(content(3 * CLUSTER, 4))],
  ['zlib: over-long with damage after the first cluster', 0, (() => {
    const s = deflate(content(4 * CLUSTER, 5));
    s.fill(0xff, s.length - 2000);
    return s;
  })()],
  ['zlib: a stream that ends short', 0, deflate(B)],
  ['zlib: a truncated stream', 0, deflate(A).subarray(0, 5000)],
  ['zlib: garbage', 0, Buffer.alloc(4096, 0xff)],
  // qemu's inflater has a 4 KiB window (windowBits -12), but it inflates the cluster in one call,
  // where zlib checks a match's distance against that call's output: 8 KiB back still decodes.
  ['zlib: a match 8 KiB back, past qemu\'s 4 KiB window', 0, deflateRawSync(Buffer.concat([content(8 * K, 7), content(8 * K, 7), content(CLUSTER - 16 * K, 8)]), { windowBits: 15 })],
  ['zstd: one frame, one cluster', 1, zstdFrame(A)],
  ['zstd: content size in the header', 1, zstdFrame(A, { contentSize: true })],
  ['zstd: trailing junk after the frame', 1, Buffer.concat([zstdFrame(A), Buffer.alloc(700, 0xff)])],
  ['zstd: two frames', 1, Buffer.concat([zstdFrame(B), zstdFrame(C)])],
  ['zstd: a skippable frame between two frames', 1, Buffer.concat([zstdFrame(B), skippable(100), zstdFrame(C)])],
  ['zstd: a second frame after the cluster is full is ignored', 1, Buffer.concat([zstdFrame(A), zstdFrame(B)])],
  ['zstd: one frame that ends short', 1, zstdFrame(B)],
  ['zstd: junk after a short frame', 1, Buffer.concat([zstdFrame(B), Buffer.alloc(700, 0xff)])],
  ['zstd: a frame longer than the cluster', 1, zstdFrame(content(CLUSTER + 4 * K, 6))],
  ['zstd: a truncated frame', 1, zstdFrame(A).subarray(0, 40 * K)],
  ['zstd: a window over the streaming limit', 1, zstdFrame(A, { windowLog: 28 })],
  ['zstd: a bomb', 1, zstdBomb(800)],
];

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-compressed-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function outcome(r: { status: number | null; stderr: string }, out: string, version?: string) {
  const hash = existsSync(out) && r.status === 0 ? createHash('sha256').update(readFileSync(out)).digest('hex') : undefined;
  rmSync(out, { force: true });
  const stderr = version ? r.stderr.replaceAll(oracle(version as '7.2'), 'qemu-img') : r.stderr;
  return { status: r.status, stderr, hash };
}

cases.forEach(([name, type, stream], i) => {
  test(`compressed cluster: ${name}`, () => {
    const image = join(dir, `c${i}.qcow2`);
    // Cluster 1 holds the stream; cluster 0 plain data, so a failure has a non-zero offset.
    writeFileSync(image, qcow2({ compressionType: type, data: new Map([[0, Buffer.alloc(CLUSTER, 7)]]), compressed: new Map([[1, stream]]) }));
    const out = join(dir, `c${i}.raw`);
    const theirs = VERSIONS.map((v) => outcome(runQemu(v, ['convert', '-O', 'raw', image, out]), out, v));
    assert.deepEqual(theirs[0], theirs[1], 'the two oracles agree');
    for (const sandbox of ['auto', 'none']) {
      const mine = outcome(runInstar(['convert', `--sandbox=${sandbox}`, '-O', 'raw', image, out]), out);
      assert.deepEqual(mine, theirs[1], `instar (--sandbox=${sandbox}) as qemu-img`);
    }
  });
});
