// Compressed zlib clusters are inflated in one call through node's zlib handle (zlib-once.ts),
// qemu's way; on a node without that handle, by the public-API emulation. Both must give the
// same cluster or the same EIO for every stream: the edge cases the oracles are tested on
// (compressed-edges.test.ts) and seeded damage of real streams.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateRawSync } from 'node:zlib';
import { inflateZlib, inflateZlibEmulated } from '../../../src/formats/qcow2/decompress.ts';
import { inflateOnce } from '../../../src/formats/qcow2/zlib-once.ts';
import { zlibBomb } from '../../adversarial/craft/qcow2.ts';
import { Rng } from '../../fuzz/prng.ts';

const K = 1024;
const CLUSTER = 64 * K;

function content(length: number, seed: number): Buffer {
  const rng = new Rng(seed);
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = 0x61 + (rng.next() % 7);
  return b;
}

/** The cluster or 'EIO'; anything else thrown fails the test. */
function outcome(decode: () => Uint8Array): string {
  try {
    return Buffer.from(decode()).toString('base64');
  } catch (e) {
    if (e instanceof Error && e.message === 'Input/output error') return 'EIO';
    throw e;
  }
}

const deflate = (b: Buffer, windowBits = 12): Buffer => deflateRawSync(b, { windowBits });
const A = content(CLUSTER, 1);
const streams: [string, Buffer][] = [
  ['one cluster exactly', deflate(A)],
  ['trailing junk', Buffer.concat([deflate(A), Buffer.alloc(700, 0xff)])],
  ['a bomb', zlibBomb(8 * 1024 * 1024)],
  ['over-long', deflate(content(3 * CLUSTER, 4))],
  ['over-long, damaged after the first cluster', (() => {
    const s = deflate(content(4 * CLUSTER, 5));
    s.fill(0xff, s.length - 2000);
    return s;
  })()],
  ['short', deflate(content(CLUSTER / 2, 2))],
  ['truncated', deflate(A).subarray(0, 5000)],
  ['garbage', Buffer.alloc(4096, 0xff)],
  ['empty', Buffer.alloc(0)],
  ['a match 8 KiB back', deflate(Buffer.concat([content(8 * K, 7), content(8 * K, 7), content(CLUSTER - 16 * K, 8)]), 15)],
];

test('node\'s zlib handle is found on this node (else the fast path is never taken)', () => {
  assert.equal(inflateOnce(deflate(A), new Uint8Array(CLUSTER)), true);
});

test('one inflate call and the public-API emulation agree on edge streams', () => {
  for (const [name, stream] of streams) {
    const once = outcome(() => inflateZlib(stream, CLUSTER));
    assert.equal(once, outcome(() => inflateZlibEmulated(stream, CLUSTER)), name);
  }
  assert.equal(outcome(() => inflateZlib(streams[0][1], CLUSTER)), A.toString('base64'));
  assert.equal(outcome(() => inflateZlib(streams[5][1], CLUSTER)), 'EIO');
});

test('one inflate call and the emulation agree on damaged streams', () => {
  const rng = new Rng(99);
  const base = [deflate(A), deflate(content(2 * CLUSTER, 3)), deflate(content(CLUSTER, 6), 15), Buffer.concat([deflate(A), Buffer.alloc(600)])];
  let failures = 0;
  for (let i = 0; i < 400; i++) {
    const s = Buffer.from(base[i % base.length]);
    const n = 1 + (rng.next() % 3);
    for (let k = 0; k < n; k++) s[rng.next() % s.length] ^= 1 << (rng.next() % 8);
    const cut = rng.next() % 4 === 0 ? s.subarray(0, rng.next() % s.length) : s;
    const once = outcome(() => inflateZlib(cut, CLUSTER));
    assert.equal(once, outcome(() => inflateZlibEmulated(cut, CLUSTER)), `case ${i}`);
    if (once === 'EIO') failures++;
  }
  // Damage must have broken some streams and left others readable, or this proves little.
  assert.ok(failures > 40 && failures < 360, `${failures} of 400 failed`);
});

test('a given buffer is filled in place, other bytes of it untouched', () => {
  const big = Buffer.alloc(CLUSTER + 10, 0xee);
  inflateZlib(deflate(A), CLUSTER, big.subarray(5, 5 + CLUSTER));
  assert.ok(big.subarray(5, 5 + CLUSTER).equals(A));
  assert.equal(big[4], 0xee);
  assert.equal(big[CLUSTER + 5], 0xee);
});
