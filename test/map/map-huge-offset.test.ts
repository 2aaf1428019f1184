// `map` of VMDK flat extents whose start puts the host offset past 2^53 or, after qemu's int64
// shift wraps, below zero: qemu-img prints these offsets exactly (as int64), so instar must carry
// them through the guest protocol as exact decimal strings. Both oracles, both output forms, and
// the default sandbox for the JSON form (the host's message check is where this used to fail).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { ImageDir, assertSameOutput } from '../differential/harness.ts';
import { humanMapLine, jsonMapEntry } from '../../src/output/map.ts';
import { profileFor } from '../../src/output/profile.ts';

/** Start offsets in sectors: 2^61 bytes, 2^62+512 and 2^63-512 (not doubles), -2^63 and -512 (wrapped). */
const STARTS = ['4503599627370496', '9007199254740993', '18014398509481983', '18014398509481984', '36028797018963967'];

const images = new ImageDir('map-huge');
before(() => {
  writeFileSync(images.path('flat.raw'), randomBytes(4096));
  for (const start of STARTS) {
    const desc = ['# Disk DescriptorFile', 'version=1', 'CID=fffffffe', 'parentCID=ffffffff', 'createType="monolithicFlat"', '',
      `RW 8 FLAT "flat.raw" ${start}`, '', 'ddb.virtualHWVersion = "4"', ''].join('\n');
    writeFileSync(images.path(`at-${start}.vmdk`), desc);
  }
});
after(() => images.remove());

describe('map: host offsets beyond 2^53 and negative', { concurrency: 4 }, () => {
  for (const start of STARTS) {
    test(`flat extent at sector ${start}, json`, () => assertSameOutput(images.dir, ['map', '--output=json', `at-${start}.vmdk`]));
    test(`flat extent at sector ${start}, human`, () => assertSameOutput(images.dir, ['map', `at-${start}.vmdk`]));
  }
  test('sandboxed, json', async () => {
    for (const start of [STARTS[1], STARTS[4]]) await assertSameOutput(images.dir, ['map', '--output=json', `at-${start}.vmdk`], { sandboxed: true });
  });
});

test('rendering: int64 offsets print as qemu prints them (decimal in JSON, uint64 hex in the table)', () => {
  const line = { start: 0, length: 4096, depth: 0, present: true, zero: false, data: true, compressed: false, filename: 'f' };
  assert.equal(jsonMapEntry({ ...line, offset: 9223372036854775296n }, profileFor('10.0')),
    '{ "start": 0, "length": 4096, "depth": 0, "present": true, "zero": false, "data": true, "compressed": false, "offset": 9223372036854775296}');
  assert.equal(jsonMapEntry({ ...line, offset: -512n }, profileFor('7.2')), '{ "start": 0, "length": 4096, "depth": 0, "present": true, "zero": false, "data": true, "offset": -512}');
  assert.equal(humanMapLine({ ...line, offset: -512n }), '0               0x1000          0xfffffffffffffe00f\n');
  assert.equal(humanMapLine({ ...line, offset: 4611686018427388416n }), '0               0x1000          0x4000000000000200f\n');
});
