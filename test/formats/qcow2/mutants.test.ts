// Differential mutation test: a qemu-made image (backing name, snapshot, bitmap) with a few bytes
// changed in the header, the extensions, the snapshot table and the bitmap structures. For every
// mutant instar must refuse with the oracles' message or report the oracles' info. The PRNG is
// seeded so a failure reproduces; qemu-img 7.2 crashing on a mutant gives no verdict for 7.2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { runQemu, VERSIONS } from '../../helpers/oracles.ts';
import { ImageError } from '../../../src/formats/types.ts';
import { asOracleSees, instarInfo, oracleInfo, qemu, tempDir } from './helpers.ts';

const MUTANTS = 150;

function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

/** Offsets worth mutating: the snapshot table, the bitmap directory and the first bitmap table. */
function targets(b: Buffer): number[] {
  let ext = 0;
  for (let at = b.readUInt32BE(100); at < 4096; ) {
    const magic = b.readUInt32BE(at);
    const len = b.readUInt32BE(at + 4);
    if (magic === 0x23852875) ext = at + 8;
    if (magic === 0) break;
    at += 8 + Math.ceil(len / 8) * 8;
  }
  assert.ok(ext > 0, 'no bitmaps extension');
  const dir = Number(b.readBigUInt64BE(ext + 16));
  return [Number(b.readBigUInt64BE(64)), dir, Number(b.readBigUInt64BE(dir)), ext - 8];
}

test(`qcow2 mutants (${MUTANTS}): same refusal or same info as both oracles`, (t) => {
  const dir = tempDir(t);
  const base = join(dir, 'base.qcow2');
  qemu('7.2', ['create', '-q', '-f', 'raw', join(dir, 'b.raw'), '64M']);
  qemu('10.0', ['create', '-q', '-f', 'qcow2', '-b', 'b.raw', '-F', 'raw', base, '64M']);
  qemu('7.2', ['snapshot', '-c', 'snap', base]);
  qemu('10.0', ['bitmap', '--add', base, 'bm']);
  const original = readFileSync(base);
  const spots = targets(original);
  const rnd = lcg(20261127);
  const mismatches: string[] = [];
  for (let i = 0; i < MUTANTS; i++) {
    const b = Buffer.from(original);
    const changes = 1 + Math.floor(rnd() * 3);
    for (let j = 0; j < changes; j++) {
      const r = rnd();
      const pos = r < 0.35 ? Math.floor(rnd() * 112) : r < 0.55 ? 112 + Math.floor(rnd() * 400) : spots[Math.floor(rnd() * spots.length)] + Math.floor(rnd() * 64);
      b[pos] = rnd() < 0.5 ? Math.floor(rnd() * 256) : b[pos] ^ (1 << Math.floor(rnd() * 8));
    }
    const path = join(dir, `m${i}.qcow2`);
    writeFileSync(path, b);
    const got = instarInfo(path);
    for (const v of VERSIONS) {
      const r = runQemu(v, ['info', '-f', 'qcow2', path], { timeoutMs: 20_000 });
      if (r.signal && v === '7.2') continue; // 7.2 segfaults on some (e.g. LUKS without crypto header)
      if (r.status === 0) {
        if (got instanceof ImageError) mismatches.push(`m${i}: instar refused (${got.message}); ${v} opened`);
        else assert.deepStrictEqual(asOracleSees(v, got), oracleInfo(v, path, 'qcow2'), `m${i} vs ${v}`);
        continue;
      }
      const prefix = `qemu-img: Could not open '${path}': `;
      assert.ok(r.stderr.startsWith(prefix), `m${i}: unexpected ${v} stderr ${r.stderr}`);
      const msg = r.stderr.slice(prefix.length).replace(/\n$/, '');
      if (!(got instanceof ImageError) || got.message !== msg) {
        mismatches.push(`m${i}: instar ${got instanceof ImageError ? got.message : 'opened'}; ${v}: ${msg}`);
      }
    }
  }
  assert.deepEqual(mismatches, []);
});
