// Hostile variations of the corpus: random bytes changed in the structures the inspector reads,
// and truncations. Whatever the bytes, the inspector answers with a report (never an exception),
// the same in file and stream mode.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { buildCorpus, removeCorpus } from './corpus.ts';
import { inspect } from '../../src/inspect/inspect.ts';

let images: [string, Buffer][];
before(() => {
  const corpus = buildCorpus();
  images = [...corpus].map(([name, path]) => [name, readFileSync(path)]);
  removeCorpus(corpus);
});

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 0x100000000;
  };
}

/** Where the formats keep what the inspector reads: headers, descriptors, tables, footers. */
const HOT = [[0, 1024], [0x8000, 0x8100], [64 * 1024, 64 * 1024 + 256], [192 * 1024, 192 * 1024 + 512]];

function mutant(bytes: Buffer, next: () => number): Buffer {
  const b = Buffer.from(bytes);
  const edits = 1 + Math.floor(next() * 8);
  for (let i = 0; i < edits; i++) {
    const inTail = next() < 0.2;
    const [lo, hi] = HOT[Math.floor(next() * HOT.length)];
    const at = inTail ? b.length - 1 - Math.floor(next() * 1536) : lo + Math.floor(next() * (hi - lo));
    if (at < 0 || at >= b.length) continue;
    b[at] = next() < 0.3 ? 0xff : Math.floor(next() * 256);
  }
  return next() < 0.15 ? b.subarray(0, Math.floor(next() * b.length)) : b;
}

test('mutated and truncated images always get a report, equal in file and stream mode', async () => {
  const next = rng(20261127);
  let n = 0;
  for (let round = 0; round < 6; round++) {
    for (const [name, bytes] of images) {
      if (bytes.length > 16 * 1024 * 1024) continue; // the large LUKS image: its header is covered by the others
      const m = mutant(bytes, next);
      const fromBuffer = await inspect(new Uint8Array(m));
      assert.equal(typeof fromBuffer.safe, 'boolean', name);
      assert.ok(fromBuffer.checks.length >= 2, name);
      const fromStream = await inspect(Readable.from([m.subarray(0, 777), m.subarray(777)].filter((c) => c.length > 0)));
      assert.deepEqual(fromStream, fromBuffer, `${name} mutant ${n}`);
      n++;
    }
  }
  assert.ok(n > 200);
});
